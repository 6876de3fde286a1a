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
    A job compiles the segment's current definition at ``as_of`` = start time, runs it on the
    backend its payload names (``enqueue(backend=...)``, else the batch one) and writes the members
    and changes files (engine.membership.computations, which owns their layout), then, in ONE
    transaction, marks the computation ``done`` (member_count, entered_count,
    exited_count, members_key, changes_key, previous_computation_id) and points
    ``segments.current_computation_id`` at it. Readers follow current_computation_id ->
    members_key and never see a partial file.

Entered / exited
    Relative to the previous current computation of the segment
    (``previous_computation_id``); on the first computation every member has entered.
    After each swap every function in ``listeners`` is called with a
    ``ComputationResult`` (a failing one is logged; the computation stays done). Listeners run
    in the computing process only and at most once: a consumer that must not miss a change
    (across restarts or processes) keeps the last computation id it handled and reads the
    ``changes.parquet`` of later ``done`` computations (``read_changes``).

Retention
    After each computation, ``ComputationStore.apply_retention`` deletes the files of old ones.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from backends.registry import FACTORIES
from common.time import api_time, naive_utc_now, parse_db_time, utc_now
from compiler import DefinitionError
from engine.errors import InvalidInput
from engine.jobs import JobWorker, Lease
from engine.membership.computations import ComputationResult
from engine.segments.store import SegmentNotFound

if TYPE_CHECKING:
    from backends.registry import Backends
    from engine.jobs import JobQueue
    from engine.membership.computations import ComputationStore
    from engine.segments.query import SegmentQueries
    from engine.segments.store import SegmentStore
    from storage.lake import EventLake

log = logging.getLogger("segops.compute")

KIND = "compute"
SCHEDULE_EVERY_SECONDS = 10.0
TRIGGERS = ("api", "schedule", "cli")

Listener = Callable[[ComputationResult], None]


class SegmentHasNoDefinition(InvalidInput):
    def __init__(self, message: str = "set a definition (PATCH) before computing"):
        super().__init__(message, code="segment_has_no_definition", field="definition")


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


class ComputeService:
    """``runtime.compute``: see the module docstring. ``listeners`` is read at each swap (callers may
    add to it later); ``observe(outcome, seconds)`` hears how each job ended (metrics)."""

    def __init__(self, jobs: JobQueue, segments: SegmentStore, queries: SegmentQueries,
                 computations: ComputationStore, backends: Backends, lake: EventLake,
                 listeners: Sequence[Listener] = (), observe: Callable[[str, float], None] | None = None):
        self._jobs, self._segments, self._queries = jobs, segments, queries
        self._computations, self._backends, self._lake = computations, backends, lake
        self._listeners = listeners
        self._observe = observe or (lambda outcome, seconds: None)
        self.worker = self._worker()  # the thread's (Runtime.start_workers); run_pending uses its own

    # -- jobs -----------------------------------------------------------------------------
    def enqueue(self, tenant_id: int, segment_id: int, trigger: str = "api", *, backend: str | None = None,
                only_if_idle: bool = False) -> int | None:
        """Queue a computation of the segment's current definition, on ``backend`` (default: the
        batch one); returns the job id (an already queued job of the segment is returned instead
        of a new one). ``only_if_idle`` (the scheduler) queues nothing, returning None, while a job
        is queued or running."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}")
        if backend is not None and backend not in FACTORIES:
            raise ValueError(f"unknown query backend {backend!r}; expected one of {', '.join(FACTORIES)}")
        payload: dict[str, Any] = {"segment_id": segment_id, **({"backend": backend} if backend else {})}
        with self._jobs.meta.transaction() as conn:
            segment = self._segments.compute_state(tenant_id, segment_id, conn)
            if segment is None or segment["deleted_at"] is not None:
                raise SegmentNotFound(segment_id)
            if segment["definition"] is None:
                raise SegmentHasNoDefinition()

            def record(conn, job_id: int) -> None:
                self._computations.create(conn, job_id, tenant_id, segment_id, segment["version"], trigger)

            job_id = self._jobs.enqueue(KIND, tenant_id, payload, subject=f"segment:{segment_id}", trigger=trigger,
                                        # a job asked for on a named backend is its own (a queued one may run elsewhere)
                                        coalesce=backend is None, only_if_idle=only_if_idle, then=record, conn=conn)
        self._jobs.wake(KIND)
        return job_id

    def get_job(self, tenant_id: int, job_id: int, segment_id: int | None = None) -> dict | None:
        row = self._computations.get(tenant_id, job_id)
        if row is None or (segment_id is not None and row["segment_id"] != segment_id):
            return None
        return job_json(row)

    def list_jobs(self, tenant_id: int, segment_id: int, limit: int, offset: int) -> tuple[int, list[dict]]:
        """Newest first."""
        count, rows = self._computations.list(tenant_id, segment_id, limit, offset)
        return count, [job_json(row) for row in rows]

    def _worker(self) -> JobWorker:
        """A worker of compute jobs with the scheduler as its tick."""
        return JobWorker(self._jobs, KIND, self.run, tick=self.schedule_due, tick_every=SCHEDULE_EVERY_SECONDS)

    def run_pending(self, *, max_jobs: int | None = None) -> list[int]:
        """Run queued jobs until none is left (or ``max_jobs``); returns the job ids run.
        Synchronous: the CLI and tests call it."""
        return [lease.job_id for lease in self._worker().run_pending(max_jobs)]

    # -- the handler ----------------------------------------------------------------------
    def run(self, claim: Lease) -> bool:
        """The compute handler; it settles its job (the swap commits with it). Returns whether it held it."""
        written: list[str] = []
        try:
            result = self._compute(claim, written)
        except DefinitionError as err:
            return self._fail(claim, f"invalid definition: {err}", written)
        except (SegmentNotFound, SegmentHasNoDefinition) as err:
            return self._fail(claim, err.message, written)
        except Exception as err:  # noqa: BLE001 - recorded on the job; the worker keeps going
            log.exception("computation %s of segment %s failed", claim.job_id, claim.payload["segment_id"])
            return self._fail(claim, f"{type(err).__name__}: {err}", written)
        # "lost": the lease lapsed and another worker owns the job now
        self._observe("lost" if result is None else "done", time.perf_counter() - claim.started)
        if result is None:
            return False
        for listener in list(self._listeners):
            try:
                listener(result)
            except Exception:  # noqa: BLE001 - one consumer must not break the others
                log.exception("computed listener %r failed for computation %s", listener, claim.job_id)
        try:
            self._computations.apply_retention(claim.tenant_id, result.segment_id)
        except Exception:  # noqa: BLE001 - retry at the next computation
            log.exception("retention failed for segment %s", result.segment_id)
        return True

    def _fail(self, claim: Lease, error: str, written: list[str]) -> bool:
        """Record the failure and remove what this attempt wrote -- unless the job was taken over
        meanwhile (lease lapsed): the files under its keys are then the new owner's."""
        error = error[:2000]
        with self._jobs.meta.transaction() as conn:
            failed = self._jobs.fail(claim, error, conn=conn)
            if failed:
                self._computations.fail(conn, claim.job_id, error)
        if failed:
            self._computations.delete_files(written)
        self._observe("failed", time.perf_counter() - claim.started)
        return failed

    def _compute(self, claim: Lease, written: list[str]) -> ComputationResult | None:
        segment_id = claim.payload["segment_id"]
        segment = self._segments.compute_state(claim.tenant_id, segment_id)
        if segment is None or segment["deleted_at"] is not None:
            raise SegmentNotFound(segment_id, "the segment was deleted")
        if segment["definition"] is None:
            raise SegmentHasNoDefinition("the segment has no definition")
        as_of = naive_utc_now()
        version, previous_id = segment["version"], segment["current_computation_id"]
        with self._jobs.meta.transaction() as conn:  # a worker that lost the job meanwhile mirrors nothing
            if not self._jobs.holds(claim, conn):
                return None
            self._computations.start(claim.job_id, as_of, version, previous_id, conn)

        compiled = self._queries.compile(claim.tenant_id, orjson.loads(segment["definition"]), as_of=as_of)
        name = claim.payload.get("backend")
        backend = self._backends.get(name) if name else self._backends.batch
        # the snapshot's files outlive a garbage collection while a long (Spark) query reads them
        with self._lake.pinned(f"compute-{claim.job_id}", compiled.lake.events, compiled.lake.profiles):
            members = self._queries.member_table(compiled, backend).column("user_id").combine_chunks()
        files = self._computations.write(claim.tenant_id, segment_id, claim.job_id, members, previous_id, as_of,
                                         written)

        with self._jobs.meta.transaction() as conn:
            swapped = self._jobs.complete(claim, conn=conn)
            if swapped:
                self._computations.finish(conn, claim.job_id, files)
                self._segments.set_current_computation(conn, segment_id, claim.job_id)
        if not swapped:
            log.warning("computation %s lost its lease; result discarded", claim.job_id)
            return None
        return ComputationResult(
            tenant_id=claim.tenant_id, segment_id=segment_id, computation_id=claim.job_id, version=version,
            computed_at=as_of, members_key=files.members_key, changes_key=files.changes_key,
            member_count=len(members), previous_computation_id=previous_id, entered=files.entered,
            exited=files.exited)

    # -- scheduler ------------------------------------------------------------------------
    def schedule_due(self, now: datetime | None = None) -> list[int]:
        """Queue the segments that are due (see module docstring); returns the new job ids."""
        now = now or utc_now()
        if now.tzinfo is None:  # naive = UTC, as everywhere in the engine
            now = now.replace(tzinfo=UTC)
        queued = []
        for row in self._computations.due_candidates():
            if row["last_status"] in ("queued", "running"):
                continue
            due = (row["last_status"] is None or row["last_version"] < row["version"]
                   or parse_db_time(row["last_queued_at"])
                   <= now - timedelta(minutes=row["compute_interval_minutes"]))
            if not due:
                continue
            try:
                job_id = self.enqueue(row["tenant_id"], row["id"], "schedule", only_if_idle=True)
            except (SegmentNotFound, SegmentHasNoDefinition):  # changed since the read above
                continue
            if job_id is not None:
                queued.append(job_id)
        return queued
