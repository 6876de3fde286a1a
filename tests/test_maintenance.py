"""Background lake maintenance: compaction keeps every event exactly once and shrinks the file count."""
from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pyarrow as pa

from engine.maintenance import maintain_lake
from engine.runtime import Runtime
from engine.settings import Settings
from storage.duck import connect
from storage.lake import EventLake
from storage.objectstore import LocalObjectStore
from tests.backend_fixtures import events_relation
from tests.membership_fixtures import add_events, add_profiles, compute, create_segment, frequency


def _batch(start: int, n: int) -> pa.Table:
    base = datetime(2026, 3, 1, 12, 0, 0)
    return pa.table({
        "event_id": [f"e{i}" for i in range(start, start + n)],
        "tenant_id": pa.array([1] * n, pa.int64()),
        "user_id": [f"u{i % 7}" for i in range(start, start + n)],
        "event_type": ["order_placed"] * n,
        "occurred_at": pa.array([base + timedelta(minutes=i) for i in range(start, start + n)], pa.timestamp("us")),
        "received_at": pa.array([base] * n, pa.timestamp("us")),
        "properties": [orjson.dumps({"total": float(i)}).decode() for i in range(start, start + n)],
    })


def test_maintain_lake_compacts_without_losing_or_duplicating(tmp_path):
    runtime = Runtime(Settings(data_dir=tmp_path, run_workers=False))
    for chunk in range(6):  # six small appends into the same day
        runtime.lake.append_events(1, _batch(chunk * 50, 50))
    before = runtime.lake.snapshot(1)
    maintain_lake(runtime.lake)
    after = runtime.lake.snapshot(1)
    assert len(before.files) == 6 and len(after.files) == 1

    con = connect(runtime.lake)
    rel = events_relation(con, runtime.lake.store, after)
    count, distinct, total = rel.aggregate("count(*), count(DISTINCT event_id), sum(p_total)").fetchone()
    assert (count, distinct, total) == (300, 300, float(sum(range(300))))


class _PinLog(LocalObjectStore):
    """The local store, noting each pin object written (what the lake's GC reads)."""

    def __init__(self, root):
        super().__init__(root)
        self.pins: list[tuple[str, dict]] = []

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if key.startswith("_pins/"):
            self.pins.append((key, orjson.loads(data)))
        super().put_bytes(key, data, if_absent=if_absent)


def test_a_compute_job_pins_the_snapshot_it_reads_and_unpins_after(tmp_path):
    runtime = Runtime(Settings(data_dir=tmp_path, run_workers=False))
    store = _PinLog(tmp_path / "lake")
    runtime.lake = EventLake(store)  # the runtime's lake, on the noting store
    add_events(runtime, 1, [("a", "buy", {}), ("b", "buy", {})])
    add_profiles(runtime, 1, {"a": {"plan": "pro"}})
    job_id = compute(runtime, 1, create_segment(runtime, 1, frequency("buy")))
    events, profiles = runtime.lake.snapshot(1), runtime.lake.profiles_snapshot(1)
    assert store.pins[0] == (f"_pins/tenant_id=1/compute-{job_id}.json",
                             {"until": store.pins[0][1]["until"],
                              "keys": [*(e.key for e in events.entries), profiles.base_key]})
    assert store.list("_pins/") == []  # removed once the job has its members
    runtime.stop()
