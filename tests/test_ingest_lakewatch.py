"""LakeWatch: ids committed by another writer are found; compaction of known rows is not re-read."""
from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from engine.ingest.service import EVENT_SCHEMA, LakeWatch
from storage.lake import EventLake
from storage.objectstore import LocalObjectStore

TENANT = 3


def _events(ids: list[str]) -> pa.Table:
    now = datetime.utcnow()
    return pa.Table.from_pylist([
        {"event_id": i, "tenant_id": TENANT, "user_id": "u", "event_type": "t", "occurred_at": now,
         "received_at": now, "properties": "{}"} for i in ids], schema=EVENT_SCHEMA)


def test_foreign_commits_are_found_and_compaction_of_own_files_is_skipped(tmp_path):
    lake = EventLake(LocalObjectStore(tmp_path / "lake"))
    since = datetime.utcnow() - timedelta(days=8)
    watch = LakeWatch(lake)
    watch.baseline(TENANT)
    for ids in (["a1", "a2"], ["a3"]):
        watch.own(TENANT, lake.append_events(TENANT, _events(ids)))
    assert watch.new_ids(TENANT, since) is None

    lake.compact(TENANT)  # merges this process's two files into one
    assert len(lake.snapshot(TENANT).entries) == 1
    assert watch.new_ids(TENANT, since) is None  # same rows, nothing to re-read

    lake.append_events(TENANT, _events(["f1", "f2"]))  # another writer
    assert sorted(watch.new_ids(TENANT, since).to_pylist()) == ["f1", "f2"]
    assert watch.new_ids(TENANT, since) is None  # accounted for now

    lake.append_events(TENANT, _events(["g1"]))  # another writer, then compaction before we look
    watch.own(TENANT, lake.append_events(TENANT, _events(["a4"])))
    lake.compact(TENANT)
    found = set(watch.new_ids(TENANT, since).to_pylist())
    assert "g1" in found  # merged into a bigger file: read, never skipped
    watch.close()
