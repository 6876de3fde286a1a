"""engine.runtime wires consumers and workers explicitly: nothing depends on which modules a
process happened to import (journeys used to hear about events only once the api had loaded
engagement.worker)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.runtime import Runtime
from engine.settings import Settings

pytest_plugins = ["tests.api_fixtures"]

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter, so that no other test has imported the api package.
_ACCEPT_WITHOUT_API = """
import json, sys
from compiler import parse_definition
from engine.ingest.service import now_us
from engine.ingest.parse import EventColumns
from engine.runtime import Runtime
from engine.segments.store import Author, SegmentStore
from engine.settings import Settings

data_dir, tenant_id = sys.argv[1], int(sys.argv[2])
rt = Runtime(Settings(data_dir=data_dir, run_workers=False))
segment = SegmentStore(rt.meta).create(
    tenant_id, name="Signed up", segment_type="rule", description="", author=Author(None, None),
    definition=parse_definition({"type": "frequency", "event_type": "signup", "operator": "gte", "value": 1}))


def journey(trigger):
    # the document as api.models.journeys' JourneyDefinition.definition() hands it to the engine
    definition = {"trigger": trigger, "exitCondition": None, "reentry": None, "steps": [
        {"id": "wait", "type": "wait", "duration": {"days": 0.0, "hours": 0.0, "minutes": 5.0, "seconds": 0.0}}]}
    return rt.sends.journeys.create(tenant_id, "J", definition, "active", may_send=False)["id"]


def runs(journey_id):
    return [r["user_id"] for r in rt.meta.query("SELECT user_id FROM journey_runs WHERE journey_id = ?", (journey_id,))]


on_event = journey({"type": "event", "eventType": "signup", "filters": []})
on_entry = journey({"type": "segment", "segmentId": segment["id"]})
received = now_us()
columns = EventColumns(event_ids=["e-1", "e-2"], user_ids=["ann", "bob"], event_types=["signup", "viewed"],
                       occurred_at=[received, received], properties=[b"{}", b"{}"])
outcome = rt.ingest.submit_events(tenant_id, columns, received).result(timeout=30)
matched = rt.event_feed.accepted(tenant_id, outcome.events)
rt.ingest.flush_now()
rt.compute.enqueue(tenant_id, segment["id"])
rt.compute.run_pending()
result = {"api_loaded": any(m == "api" or m.startswith("api.") for m in sys.modules), "matched": matched,
          "event_runs": runs(on_event), "entry_runs": runs(on_entry)}
rt.stop()
print(json.dumps(result))
"""


def test_a_process_without_the_api_starts_journeys_on_events_and_segment_entry(runtime, data_dir, tenant_a):
    out = subprocess.run([sys.executable, "-c", _ACCEPT_WITHOUT_API, str(data_dir), str(tenant_a.tenant_id)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"api_loaded": False, "matched": 1, "event_runs": ["ann"],
                                                      "entry_runs": ["ann"]}


def test_start_workers_starts_the_explicit_list(tmp_path):
    rt = Runtime(Settings(data_dir=tmp_path / "data", run_workers=False))
    try:
        rt.start_workers()
        assert sorted(t.name for t in rt.workers) == sorted([
            "segops-wal-commit", "segops-flusher",  # ingest
            "segops-compute", "segops-exports", "segops-send-worker", "segops-lake-maintenance"])
        assert all(t.is_alive() for t in rt.workers)
        assert "membership" in rt.__dict__  # the index is loaded before the first request
    finally:
        rt.stop()
    assert not any(t.is_alive() for t in rt.workers)


def test_a_read_only_process_starts_no_worker_but_loads_the_index(tmp_path):
    Runtime(Settings(data_dir=tmp_path / "data", run_workers=False)).stop()  # the data dir exists
    rt = Runtime(Settings(data_dir=tmp_path / "data", run_workers=False, read_only=True))
    try:
        rt.start_workers()
        assert rt.workers == [] and "membership" in rt.__dict__
    finally:
        rt.stop()
