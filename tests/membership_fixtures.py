"""Helpers for membership, export and profile tests: real events and profiles in the lake,
real segments computed by engine.membership.compute.

Use with ``pytest_plugins = ["tests.api_fixtures"]`` and import the helpers::

    add_events(runtime, tenant_id, [("u1", "order_placed", {"total": 30})])
    segment_id = create_segment(runtime, tenant_id, {"type": "frequency", ...})
    compute(runtime, tenant_id, segment_id)
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from compiler import parse_definition
from engine.membership import computations as compute_module
from engine.segments.store import Author, SegmentStore

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def add_events(runtime, tenant_id: int, events: list[tuple]) -> None:
    """``events``: (user_id, event_type, properties dict[, minutes ago]) tuples."""
    rows = []
    for event in events:
        user_id, event_type, properties = event[:3]
        ago = event[3] if len(event) > 3 else 60
        moment = NOW - timedelta(minutes=ago)
        rows.append({"event_id": uuid.uuid4().hex, "tenant_id": tenant_id, "user_id": user_id,
                     "event_type": event_type, "occurred_at": moment, "received_at": moment,
                     "properties": orjson.dumps(properties).decode()})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("event_id", pa.string()), ("tenant_id", pa.int64()), ("user_id", pa.string()),
        ("event_type", pa.string()), ("occurred_at", pa.timestamp("us")), ("received_at", pa.timestamp("us")),
        ("properties", pa.string())]))
    runtime.lake.append_events(tenant_id, table)


def add_profiles(runtime, tenant_id: int, traits_by_user: dict[str, dict]) -> None:
    runtime.lake.upsert_profiles(tenant_id, [
        {"user_id": user_id, "traits": traits, "updated_at": NOW} for user_id, traits in traits_by_user.items()])


def frequency(event_type: str, at_least: int = 1) -> dict:
    """Users with at least ``at_least`` events of ``event_type``."""
    return {"type": "frequency", "event_type": event_type, "operator": "gte", "value": at_least}


def create_segment(runtime, tenant_id: int, definition: dict | None, name: str = "segment") -> int:
    store = SegmentStore(runtime.meta)
    parsed = parse_definition(definition) if definition is not None else None
    return store.create(tenant_id, name=name, segment_type="rule", description="", definition=parsed,
                        author=Author(None, None))["id"]


def set_definition(runtime, tenant_id: int, segment_id: int, definition: dict) -> None:
    SegmentStore(runtime.meta).update(tenant_id, segment_id, author=Author(None, None),
                                      definition=parse_definition(definition))


def compute(runtime, tenant_id: int, segment_id: int) -> int:
    """Compute the segment now (synchronously); returns the computation id."""
    job_id = runtime.compute.enqueue(tenant_id, segment_id, "cli")
    runtime.compute.run_pending()
    row = runtime.meta.query_one("SELECT status, error FROM segment_computations WHERE id = ?", (job_id,))
    assert row["status"] == "done", row["error"]
    return job_id


def record_computation(runtime, tenant_id: int, segment_id: int, members) -> int:
    """A done computation with exactly ``members``, as engine.membership.compute leaves it (members.parquet
    under its key, the row, the segment's current pointer), without evaluating a definition:
    for index tests that need many arbitrary member sets quickly. Returns its id."""
    import pyarrow.parquet as pq

    from common.time import db_time
    from engine.segments.store import ensure_schema

    ensure_schema(runtime.meta)
    now = db_time(NOW)
    computation_id = runtime.meta.execute(
        "INSERT INTO segment_computations (tenant_id, segment_id, version, status, trigger, queued_at, as_of,"
        " started_at, finished_at, member_count) VALUES (?, ?, 1, 'done', 'cli', ?, ?, ?, ?, ?)",
        (tenant_id, segment_id, now, now, now, now, len(members))).lastrowid
    key = compute_module.computation_prefix(tenant_id, segment_id, computation_id) + "members.parquet"
    path = runtime.lake.store.new_scratch_path(".parquet")
    users = pa.array(sorted(members), pa.string())
    pq.write_table(pa.table([users, pa.repeat(pa.scalar(NOW, pa.timestamp("us")), len(users))],
                            schema=compute_module.MEMBERS_SCHEMA), path)
    runtime.lake.store.put_file(key, path, move=True)
    with runtime.meta.transaction() as conn:
        conn.execute("UPDATE segment_computations SET members_key = ? WHERE id = ?", (key, computation_id))
        conn.execute("UPDATE segments SET current_computation_id = ? WHERE id = ?", (computation_id, segment_id))
    return computation_id
