"""Membership computation: jobs, the scheduler, materialized members, entered/exited.

Jobs
    A computation is a ``compute`` job of engine.jobs (subject ``segment:<id>``; job id =
    computation id, the ``segment_computations`` row carrying its results): ``queued`` ->
    ``running`` -> ``done`` | ``failed``, mirrored on ``segment_computations.status`` in the
    same transactions for its readers. ``enqueue`` coalesces: while a segment has a queued
    job, asking again returns that job. The queue never runs two jobs of one segment at once
    and takes over a job whose worker died once its lease lapses, so any number of worker
    threads and processes may share one metadata database.

Scheduler
    ``schedule_due`` queues every live segment with a definition that has no queued or
    running job and either was never computed, has a newer definition version than its
    last job, or was last queued ``compute_interval_minutes`` ago or more.

Materialization (consumed by the membership index, members list, exports and journeys)
    A job compiles the segment's current definition at ``as_of`` = start time and writes,
    through the lake's object store (atomic puts)::

        segments/tenant_id=<T>/segment_id=<S>/computation=<C>/members.parquet
            user_id VARCHAR (sorted ascending, unique), computed_at TIMESTAMP (naive UTC = as_of)
        segments/tenant_id=<T>/segment_id=<S>/computation=<C>/changes.parquet
            user_id VARCHAR, change VARCHAR ('entered' | 'exited'), at TIMESTAMP (= as_of),
            sorted by change then user_id

    then, in ONE transaction, marks the computation ``done`` (member_count, entered_count,
    exited_count, members_key, changes_key, previous_computation_id) and points
    ``segments.current_computation_id`` at it. Readers follow current_computation_id ->
    members_key and never see a partial file.

Entered / exited
    Relative to the previous current computation of the segment
    (``previous_computation_id``); on the first computation every member has entered.
    After each swap every function in ``runtime.compute_listeners`` is called with a
    ``ComputationResult`` (a failing one is logged; the computation stays done). Listeners run
    in the computing process only and at most once: a consumer that must not miss a change
    (across restarts or processes) keeps the last computation id it handled and reads the
    ``changes.parquet`` of later ``done`` computations (``read_changes``).

Retention
    Files of all but the newest ``KEEP_COMPUTATIONS`` done computations of a segment are
    deleted once a newer computation superseded them at least ``RETENTION_GRACE`` ago, so a
    reader that started on a computation can finish with it (rows stay, with
    ``files_deleted_at``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.time import api_time, db_time, naive_utc_now, parse_db_time, utc_now
from compiler import DefinitionError
from engine.errors import InvalidInput
from engine.jobs import JobWorker, Lease
from engine.membership.computations import read_members
from engine.segments.query import compile_definition, member_table
from engine.segments.store import SegmentNotFound, ensure_schema

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger("segops.compute")

KIND = "compute"
SCHEDULE_EVERY_SECONDS = 10.0
KEEP_COMPUTATIONS = 3
RETENTION_GRACE = timedelta(hours=1)
TRIGGERS = ("api", "schedule", "cli")

_TIMESTAMP = pa.timestamp("us")
MEMBERS_SCHEMA = pa.schema([pa.field("user_id", pa.string()), pa.field("computed_at", _TIMESTAMP)])
CHANGES_SCHEMA = pa.schema([pa.field("user_id", pa.string()), pa.field("change", pa.string()),
                            pa.field("at", _TIMESTAMP)])


def computation_prefix(tenant_id: int, segment_id: int, computation_id: int) -> str:
    return f"segments/tenant_id={tenant_id}/segment_id={segment_id}/computation={computation_id}/"


@dataclass(frozen=True)
class ComputationResult:
    """What a hook learns about a successful computation."""

    tenant_id: int
    segment_id: int
    computation_id: int
    version: int
    computed_at: datetime  # naive UTC (= as_of)
    members_key: str
    changes_key: str
    member_count: int
    previous_computation_id: int | None  # None: first computation, everyone entered
    entered: pa.Array  # user ids, sorted
    exited: pa.Array

    @property
    def entered_user_ids(self) -> list[str]:
        return self.entered.to_pylist()

    @property
    def exited_user_ids(self) -> list[str]:
        return self.exited.to_pylist()


class SegmentHasNoDefinition(InvalidInput):
    def __init__(self, message: str = "set a definition (PATCH) before computing"):
        super().__init__(message, code="segment_has_no_definition", field="definition")


# -- jobs -------------------------------------------------------------------------------
def job_json(row) -> dict[str, Any]:
    started, finished = parse_db_time(row["started_at"]), parse_db_time(row["finished_at"])
    return {
        "job_id": row["id"],
        "segment_id": row["segment_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "version": row["version"],
        "queued_at": api_time(row["queued_at"]),
        "started_at": api_time(row["started_at"]),
        "finished_at": api_time(row["finished_at"]),
        "as_of": api_time(row["as_of"]),
        "duration_seconds": round((finished - started).total_seconds(), 3) if started and finished else None,
        "member_count": row["member_count"],
        "entered_count": row["entered_count"],
        "exited_count": row["exited_count"],
        "error": row["error"],
    }


def enqueue(runtime: Runtime, tenant_id: int, segment_id: int, trigger: str = "api",
            *, only_if_idle: bool = False) -> int | None:
    """Queue a computation of the segment's current definition; returns the job id (an
    already queued job of the segment is returned instead of a new one). ``only_if_idle``
    (the scheduler) queues nothing, returning None, while a job is queued or running."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}")
    ensure_schema(runtime.meta)
    jobs = runtime.jobs  # created (and the data dir migrated) before the transaction
    with runtime.meta.transaction() as conn:
        segment = conn.execute(
            "SELECT version, definition FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (segment_id, tenant_id)).fetchone()
        if segment is None:
            raise SegmentNotFound(segment_id)
        if segment["definition"] is None:
            raise SegmentHasNoDefinition()

        def record(conn, job_id: int) -> None:
            conn.execute(
                "INSERT INTO segment_computations (id, tenant_id, segment_id, version, status, trigger, queued_at)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (job_id, tenant_id, segment_id, segment["version"], trigger, db_time(utc_now())))

        job_id = jobs.enqueue(KIND, tenant_id, {"segment_id": segment_id}, subject=f"segment:{segment_id}",
                              trigger=trigger, coalesce=True, only_if_idle=only_if_idle, then=record, conn=conn)
    jobs.wake(KIND)
    return job_id


def get_job(runtime: Runtime, tenant_id: int, job_id: int, segment_id: int | None = None) -> dict | None:
    ensure_schema(runtime.meta)
    row = runtime.meta.query_one(
        "SELECT * FROM segment_computations WHERE id = ? AND tenant_id = ?", (job_id, tenant_id))
    if row is None or (segment_id is not None and row["segment_id"] != segment_id):
        return None
    return job_json(row)


def list_jobs(runtime: Runtime, tenant_id: int, segment_id: int, limit: int, offset: int) -> tuple[int, list[dict]]:
    """Newest first."""
    ensure_schema(runtime.meta)
    count = runtime.meta.query_one(
        "SELECT COUNT(*) FROM segment_computations WHERE segment_id = ? AND tenant_id = ?",
        (segment_id, tenant_id))[0]
    rows = runtime.meta.query(
        "SELECT * FROM segment_computations WHERE segment_id = ? AND tenant_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
        (segment_id, tenant_id, limit, offset))
    return count, [job_json(row) for row in rows]


def compute_worker(runtime: Runtime) -> JobWorker:
    """The compute jobs' worker (with the scheduler as its tick); ``run_pending`` runs them here and now."""
    return JobWorker(runtime.jobs, KIND, lambda lease: _run_job(runtime, lease),
                     tick=lambda: schedule_due(runtime), tick_every=SCHEDULE_EVERY_SECONDS)


def run_pending_jobs(runtime: Runtime, *, max_jobs: int | None = None) -> list[int]:
    """Run queued jobs until none is left (or ``max_jobs``); returns the job ids run.
    Synchronous: the CLI and tests call it."""
    ensure_schema(runtime.meta)
    return [lease.job_id for lease in compute_worker(runtime).run_pending(max_jobs)]


def _fail(runtime: Runtime, claim: Lease, error: str, written: list[str]) -> bool:
    """Record the failure and remove what this attempt wrote -- unless the job was taken over
    meanwhile (lease lapsed): the files under its keys are then the new owner's."""
    error, now = error[:2000], db_time(utc_now())
    with runtime.meta.transaction() as conn:
        failed = runtime.jobs.fail(claim, error, conn=conn)
        if failed:
            conn.execute("UPDATE segment_computations SET status = 'failed', started_at = coalesce(started_at, ?),"
                         " finished_at = ?, error = ? WHERE id = ?", (now, now, error, claim.job_id))
    if failed:
        _delete(runtime, written)
    runtime.metrics.job_finished("failed", time.perf_counter() - claim.started)
    return failed


def _run_job(runtime: Runtime, claim: Lease) -> bool:
    """The compute handler; it settles its job (the swap commits with it). Returns whether it held it."""
    written: list[str] = []
    try:
        result = _compute(runtime, claim, written)
    except DefinitionError as err:
        return _fail(runtime, claim, f"invalid definition: {err}", written)
    except (SegmentNotFound, SegmentHasNoDefinition) as err:
        return _fail(runtime, claim, err.message, written)
    except Exception as err:  # noqa: BLE001 - recorded on the job; the worker keeps going
        log.exception("computation %s of segment %s failed", claim.job_id, claim.payload["segment_id"])
        return _fail(runtime, claim, f"{type(err).__name__}: {err}", written)
    # "lost": the lease lapsed and another worker owns the job now
    runtime.metrics.job_finished("lost" if result is None else "done", time.perf_counter() - claim.started)
    if result is None:
        return False
    for listener in list(runtime.compute_listeners):
        try:
            listener(result)
        except Exception:  # noqa: BLE001 - one consumer must not break the others
            log.exception("computed listener %r failed for computation %s", listener, claim.job_id)
    try:
        apply_retention(runtime, claim.tenant_id, result.segment_id)
    except Exception:  # noqa: BLE001 - retry at the next computation
        log.exception("retention failed for segment %s", result.segment_id)
    return True


def _compute(runtime: Runtime, claim: Lease, written: list[str]) -> ComputationResult | None:
    meta, store = runtime.meta, runtime.lake.store
    segment_id = claim.payload["segment_id"]
    segment = meta.query_one(
        "SELECT version, definition, current_computation_id, deleted_at FROM segments WHERE id = ? AND tenant_id = ?",
        (segment_id, claim.tenant_id))
    if segment is None or segment["deleted_at"] is not None:
        raise SegmentNotFound(segment_id, "the segment was deleted")
    if segment["definition"] is None:
        raise SegmentHasNoDefinition("the segment has no definition")
    as_of = naive_utc_now()
    version, previous_id = segment["version"], segment["current_computation_id"]
    meta.execute("UPDATE segment_computations SET status = 'running', started_at = ?, finished_at = NULL, error = NULL,"
                 " as_of = ?, version = ?, previous_computation_id = ? WHERE id = ?",
                 (db_time(as_of), db_time(as_of), version, previous_id, claim.job_id))

    compiled = compile_definition(runtime, claim.tenant_id, orjson.loads(segment["definition"]), as_of=as_of)
    with runtime.lake.pinned(f"compute-{claim.job_id}", compiled.lake.events, compiled.lake.profiles):
        members = member_table(runtime, compiled, runtime.backends.batch).column("user_id").combine_chunks()
    previous = _previous_members(runtime, previous_id)
    entered = members.filter(pc.invert(pc.is_in(members, value_set=previous)))
    exited = previous.filter(pc.invert(pc.is_in(previous, value_set=members)))

    prefix = computation_prefix(claim.tenant_id, segment_id, claim.job_id)
    members_key, changes_key = prefix + "members.parquet", prefix + "changes.parquet"
    at = pa.scalar(as_of, _TIMESTAMP)
    _put_table(store, members_key, pa.table([members, pa.repeat(at, len(members))], schema=MEMBERS_SCHEMA), written)
    changes = pa.table([
        pa.concat_arrays([entered, exited]),
        pa.concat_arrays([pa.repeat(pa.scalar("entered"), len(entered)),
                          pa.repeat(pa.scalar("exited"), len(exited))]).cast(pa.string()),
        pa.repeat(at, len(entered) + len(exited)),
    ], schema=CHANGES_SCHEMA)
    _put_table(store, changes_key, changes, written)

    with meta.transaction() as conn:
        swapped = runtime.jobs.complete(claim, conn=conn)
        if swapped:
            conn.execute(
                "UPDATE segment_computations SET status = 'done', finished_at = ?, member_count = ?,"
                " entered_count = ?, exited_count = ?, members_key = ?, changes_key = ? WHERE id = ?",
                (db_time(utc_now()), len(members), len(entered), len(exited), members_key, changes_key,
                 claim.job_id))
            conn.execute("UPDATE segments SET current_computation_id = ? WHERE id = ?", (claim.job_id, segment_id))
    if not swapped:
        log.warning("computation %s lost its lease; result discarded", claim.job_id)
        return None
    return ComputationResult(
        tenant_id=claim.tenant_id, segment_id=segment_id, computation_id=claim.job_id, version=version,
        computed_at=as_of, members_key=members_key, changes_key=changes_key, member_count=len(members),
        previous_computation_id=previous_id, entered=entered, exited=exited)


def _previous_members(runtime: Runtime, computation_id: int | None) -> pa.Array:
    empty = pa.array([], pa.string())
    if computation_id is None:
        return empty
    row = runtime.meta.query_one("SELECT members_key FROM segment_computations WHERE id = ?", (computation_id,))
    if row is None or row["members_key"] is None:
        return empty
    return read_members(runtime.lake.store, row["members_key"])


def _put_table(store, key: str, table: pa.Table, written: list[str]) -> None:
    path = store.new_scratch_path(".parquet")
    try:
        pq.write_table(table, path, compression="zstd")
        written.append(key)
        store.put_file(key, path, move=True)
    finally:
        path.unlink(missing_ok=True)


def _delete(runtime: Runtime, keys: list[str]) -> None:
    for key in keys:
        try:
            runtime.lake.store.delete(key)
        except Exception:  # noqa: BLE001 - an orphan file is harmless; it is never referenced
            log.exception("could not delete %s", key)


def read_changes(runtime: Runtime, tenant_id: int, computation_id: int) -> pa.Table | None:
    """The entered/exited rows of a done computation of the tenant (None if unknown or gone)."""
    ensure_schema(runtime.meta)
    row = runtime.meta.query_one(
        "SELECT changes_key FROM segment_computations WHERE id = ? AND tenant_id = ? AND status = 'done'"
        " AND files_deleted_at IS NULL", (computation_id, tenant_id))
    if row is None or row["changes_key"] is None:
        return None
    return pq.read_table(pa.BufferReader(runtime.lake.store.get_bytes(row["changes_key"])))


def apply_retention(runtime: Runtime, tenant_id: int, segment_id: int, now: datetime | None = None) -> int:
    """Delete the files of old computations (see module docstring); returns how many computations."""
    threshold = db_time((now or utc_now()) - RETENTION_GRACE)
    rows = runtime.meta.query(
        """SELECT c.id, c.members_key, c.changes_key FROM segment_computations c
           JOIN segments s ON s.id = c.segment_id
           WHERE c.segment_id = :segment AND c.tenant_id = :tenant AND c.status = 'done'
             AND c.files_deleted_at IS NULL AND c.id != COALESCE(s.current_computation_id, -1)
             AND c.id NOT IN (SELECT id FROM segment_computations WHERE segment_id = :segment AND status = 'done'
                              ORDER BY id DESC LIMIT :keep)
             AND (SELECT MIN(n.finished_at) FROM segment_computations n          -- when it was superseded
                  WHERE n.segment_id = :segment AND n.status = 'done' AND n.id > c.id) < :threshold""",
        {"segment": segment_id, "tenant": tenant_id, "keep": KEEP_COMPUTATIONS, "threshold": threshold})
    for row in rows:
        _delete(runtime, [key for key in (row["members_key"], row["changes_key"]) if key])
        runtime.meta.execute("UPDATE segment_computations SET files_deleted_at = ? WHERE id = ?",
                             (db_time(utc_now()), row["id"]))
    return len(rows)


# -- scheduler --------------------------------------------------------------------------
def schedule_due(runtime: Runtime, now: datetime | None = None) -> list[int]:
    """Queue the segments that are due (see module docstring); returns the new job ids."""
    ensure_schema(runtime.meta)
    now = now or utc_now()
    rows = runtime.meta.query(
        """SELECT s.id, s.tenant_id, s.version, s.compute_interval_minutes,
                  l.status AS last_status, l.version AS last_version, l.queued_at AS last_queued_at
           FROM segments s
           LEFT JOIN segment_computations l ON l.id = (
               SELECT MAX(c.id) FROM segment_computations c WHERE c.segment_id = s.id)
           WHERE s.deleted_at IS NULL AND s.definition IS NOT NULL""")
    queued = []
    for row in rows:
        if row["last_status"] in ("queued", "running"):
            continue
        due = (row["last_status"] is None or row["last_version"] < row["version"]
               or parse_db_time(row["last_queued_at"]) <= now - timedelta(minutes=row["compute_interval_minutes"]))
        if not due:
            continue
        try:
            job_id = enqueue(runtime, row["tenant_id"], row["id"], "schedule", only_if_idle=True)
        except (SegmentNotFound, SegmentHasNoDefinition):  # changed since the read above
            continue
        if job_id is not None:
            queued.append(job_id)
    return queued


# -- worker -----------------------------------------------------------------------------
def start_compute_worker(runtime: Runtime) -> None:
    """The scheduler and job runner thread (not in read-only processes; Runtime.start_workers)."""
    if runtime.settings.read_only:
        return
    runtime.backends  # noqa: B018 - created first so that it is closed after the worker stops
    worker = compute_worker(runtime)
    runtime.add_worker(worker.start())
    runtime.on_stop(worker.stop)
