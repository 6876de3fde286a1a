"""ONE leased job queue (``jobs``) for the background work of every kind: compute, export, send (later sync).

A job moves ``queued -> running -> done | failed`` (``fail(retry_at=...)``: back to ``queued``,
due at ``retry_at``). A worker claims due jobs in one SQLite write transaction and holds a
lease (``lease_owner``, ``lease_until``, ``attempts``) that it renews while it works
(``keep_alive``); every later write of the worker is a compare-and-set on
``(id, attempts, lease_owner, 'running')``, so a worker that lost its lease (it stalled, another
one took the job over once the lease lapsed) learns it from ``complete``/``fail`` returning
False and discards its result. So any number of worker threads and processes may share one
metadata database.

``subject`` serializes: at most one running job per ``(kind, subject)`` (e.g. ``segment:12``),
and ``enqueue`` can coalesce on it (``coalesce``: return the subject's queued job instead of a
new one; ``only_if_idle``: queue nothing while the subject has a queued or running job).

Few writes per job, none when idle: ``claim`` reads first and takes the write lock only when
something is due, because every commit bumps ``PRAGMA data_version``, which the membership
hot path reads to notice catalog changes.

Job ids are never reused (AUTOINCREMENT): a compute job's id is its computation's id.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from common.beat import beating
from common.time import db_time, utc_now
from storage.metadata import MetadataStore

log = logging.getLogger("segops.jobs")

LEASE = timedelta(seconds=120)
HEARTBEAT_SECONDS = 30.0
POLL_SECONDS = 2.0
FINISHED = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,     -- never reused: computation ids = compute job ids
    kind TEXT NOT NULL,                       -- 'compute' | 'export' | 'send'
    tenant_id INTEGER NOT NULL,
    subject TEXT,                             -- at most one running job per (kind, subject)
    payload TEXT NOT NULL DEFAULT '{}',       -- JSON: {"segment_id", "backend"?} | {"export_id"} | {}
    trigger TEXT NOT NULL DEFAULT 'api',
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    not_before TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    lease_owner TEXT,
    lease_until TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (kind, not_before, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (kind, subject, lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant_id, kind, id);
"""

_DUE = "((c.status = 'queued' AND c.not_before <= :now) OR (c.status = 'running' AND c.lease_until < :now))"
_FREE = """(c.subject IS NULL OR NOT EXISTS (
    SELECT 1 FROM jobs r WHERE r.kind = c.kind AND r.subject = c.subject AND r.id != c.id
      AND r.status = 'running' AND r.lease_until >= :now))"""
_CLAIMABLE = f"SELECT c.id, c.subject FROM jobs c WHERE c.kind = :kind AND {_DUE} AND {_FREE} ORDER BY c.id"
_HELD = "id = :id AND attempts = :attempt AND lease_owner = :owner AND status = 'running'"


def worker_identity() -> str:
    """Who holds a lease: host, process and a per-worker nonce (two workers of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    """A claimed job; the proof its holder shows on every later write."""

    job_id: int
    kind: str
    tenant_id: int
    subject: str | None
    payload: dict[str, Any]
    attempt: int
    owner: str
    started: float = field(default_factory=time.perf_counter, compare=False)


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(row["id"], row["kind"], row["tenant_id"], row["subject"], orjson.loads(row["payload"]),
                 row["attempts"], row["lease_owner"])


def _move_queues_into_jobs(conn: sqlite3.Connection) -> None:
    """Migration 1 (data dirs of before the one queue): each computation's queue state becomes a
    compute job with the same id (a running one is taken over once its lease lapses), then each
    export gets a job (a running one, which had no lease, is queued again as the old worker did at
    start) and ``segment_exports.job_id`` points at it."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "segment_computations" in tables:
        conn.execute(
            "INSERT INTO jobs (id, kind, tenant_id, subject, payload, trigger, status, not_before, queued_at,"
            " started_at, finished_at, lease_until, attempts, error)"
            " SELECT id, 'compute', tenant_id, 'segment:' || segment_id, json_object('segment_id', segment_id),"
            " trigger, status, queued_at, queued_at, started_at, finished_at, lease_until, attempts, error"
            " FROM segment_computations ORDER BY id")
    if "segment_exports" in tables:
        if "job_id" not in {row[1] for row in conn.execute("PRAGMA table_info(segment_exports)")}:
            conn.execute("ALTER TABLE segment_exports ADD COLUMN job_id INTEGER")
        for export in conn.execute("SELECT * FROM segment_exports WHERE job_id IS NULL ORDER BY id").fetchall():
            status = "queued" if export["status"] == "running" else export["status"]
            job_id = conn.execute(
                "INSERT INTO jobs (kind, tenant_id, payload, trigger, status, not_before, queued_at, started_at,"
                " finished_at, error) VALUES ('export', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (export["tenant_id"], orjson.dumps({"export_id": export["id"]}).decode(), export["trigger"], status,
                 export["created_at"], export["created_at"], export["started_at"], export["finished_at"],
                 export["error"])).lastrowid
            conn.execute("UPDATE segment_exports SET job_id = ?, status = ? WHERE id = ?",
                         (job_id, status, export["id"]))


SEND_CHUNK = 1000  # sends per job made by migration 2 (the default ``send_chunk``)


def _move_sends_into_jobs(conn: sqlite3.Connection) -> None:
    """Migration 2 (data dirs of before sends were jobs): ``email_sends`` gains ``job_id``; its open rows,
    which carried their own lease, become ``send`` jobs: queued ones one job per (tenant, source, due time)
    and ``SEND_CHUNK`` rows, due when they were; ``handing_off`` ones one running job per (tenant, dead
    or live worker) whose lease lapses when theirs did, so its next holder settles them by recovery
    (``was_delivered``) exactly as before. The row-lease indexes make way for ``job_id`` ones."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "email_sends" not in tables:
        return
    if "job_id" not in {row[1] for row in conn.execute("PRAGMA table_info(email_sends)")}:
        conn.execute("ALTER TABLE email_sends ADD COLUMN job_id INTEGER")
    conn.execute("DROP INDEX IF EXISTS email_sends_queue")
    conn.execute("DROP INDEX IF EXISTS email_sends_handing")
    conn.execute("CREATE INDEX IF NOT EXISTS email_sends_queued ON email_sends (job_id) WHERE status = 'queued'")
    conn.execute("CREATE INDEX IF NOT EXISTS email_sends_handing_off ON email_sends (job_id)"
                 " WHERE status = 'handing_off'")
    groups: dict[tuple, list[int]] = {}
    for row in conn.execute("SELECT id, tenant_id, source, status, not_before, lease_owner, lease_until"
                            " FROM email_sends WHERE status IN ('queued', 'handing_off') ORDER BY id"):
        if row["status"] == "queued":
            key = (row["tenant_id"], row["source"], "queued", row["not_before"], None)
        else:
            key = (row["tenant_id"], row["source"], "running", None, row["lease_owner"])
        groups.setdefault(key, []).append(row["id"])
    now = db_time(utc_now())
    for (tenant_id, source, status, due, owner), ids in groups.items():
        for start in range(0, len(ids), SEND_CHUNK):
            part = ids[start:start + SEND_CHUNK]
            marks = ",".join("?" * len(part))
            until = None if status == "queued" else conn.execute(
                f"SELECT max(coalesce(lease_until, ?)) FROM email_sends WHERE id IN ({marks})",
                (now, *part)).fetchone()[0]
            job_id = conn.execute(
                "INSERT INTO jobs (kind, tenant_id, trigger, status, not_before, queued_at, started_at, lease_owner,"
                " lease_until, attempts) VALUES ('send', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant_id, source, status, due or now, now, None if status == "queued" else now, owner, until,
                 0 if status == "queued" else 1)).lastrowid
            conn.execute(f"UPDATE email_sends SET job_id = ? WHERE id IN ({marks})", (job_id, *part))


class JobQueue:
    """``runtime.jobs``: the ``jobs`` table plus in-process wake-ups per kind. Creating it migrates
    an older data dir (the database is copied to ``meta.sqlite.pre-jobs`` first)."""

    def __init__(self, meta: MetadataStore):
        self.meta = meta
        meta.ensure_schema("jobs", SCHEMA)
        meta.migrate("jobs", 1, [_move_queues_into_jobs])
        meta.migrate("jobs", 2, [_move_sends_into_jobs])
        self._events: dict[str, threading.Event] = {}
        self._events_lock = threading.Lock()
        self._finished = threading.Condition()

    # -- queueing -----------------------------------------------------------------------
    def enqueue(self, kind: str, tenant_id: int, payload: dict[str, Any] | None = None, *,
                subject: str | None = None, trigger: str = "api", not_before: datetime | None = None,
                coalesce: bool = False, only_if_idle: bool = False,
                then: Callable[[sqlite3.Connection, int], None] | None = None,
                conn: sqlite3.Connection | None = None) -> int | None:
        """Queue a job; returns its id. ``coalesce``: the subject's queued job is returned instead
        of a new one; ``only_if_idle``: None while the subject has a queued or running job.
        ``then(conn, job_id)`` runs in the same transaction for a new job only (e.g. the row that
        carries its results). With ``conn`` (the caller's transaction) the caller wakes the kind
        after its commit; without, the job is committed and the kind woken here."""
        if conn is None:
            with self.meta.transaction() as own:
                job_id = self.enqueue(kind, tenant_id, payload, subject=subject, trigger=trigger,
                                      not_before=not_before, coalesce=coalesce, only_if_idle=only_if_idle,
                                      then=then, conn=own)
            self.wake(kind)
            return job_id
        if subject is not None and (coalesce or only_if_idle):
            pending = conn.execute(
                # OR, not IN: SQLite then searches both partial indexes instead of scanning every job
                "SELECT id, status FROM jobs WHERE kind = ? AND subject = ?"
                " AND (status = 'queued' OR status = 'running') ORDER BY status = 'queued' DESC, id LIMIT 1",
                (kind, subject)).fetchone()
            if pending is not None and (only_if_idle or pending["status"] == "queued"):
                return None if only_if_idle else pending["id"]
        now = utc_now()
        job_id = conn.execute(
            "INSERT INTO jobs (kind, tenant_id, subject, payload, trigger, status, not_before, queued_at)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (kind, tenant_id, subject, orjson.dumps(payload or {}).decode(), trigger,
             db_time(not_before or now), db_time(now))).lastrowid
        if then is not None:
            then(conn, job_id)
        return job_id

    # -- claiming -----------------------------------------------------------------------
    def claim(self, kind: str, lease: timedelta = LEASE, limit: int = 1, owner: str | None = None) -> list[Lease]:
        """Up to ``limit`` due jobs of ``kind`` (oldest first): queued ones, and running ones whose
        lease lapsed (their worker died); never a job whose subject another live lease holds, nor two
        of one subject. A read first, so an idle queue takes no write lock."""
        if self.meta.query_one(_CLAIMABLE + " LIMIT 1", {"kind": kind, "now": db_time(utc_now())}) is None:
            return []
        owner = owner or worker_identity()
        with self.meta.transaction() as conn:
            picked: list[int] = []
            subjects: set[str] = set()
            for row in conn.execute(_CLAIMABLE, {"kind": kind, "now": db_time(utc_now())}):
                if row["subject"] in subjects:
                    continue
                picked.append(row["id"])
                if row["subject"] is not None:
                    subjects.add(row["subject"])
                if len(picked) == limit:
                    break
            return [self._take(conn, job_id, lease, owner) for job_id in picked]

    def claim_id(self, job_id: int, lease: timedelta = LEASE, owner: str | None = None) -> Lease | None:
        """Claim this one job now (the CLI's "run it here"), on the same terms as ``claim``."""
        with self.meta.transaction() as conn:
            if conn.execute(f"SELECT 1 FROM jobs c WHERE c.id = :id AND {_DUE} AND {_FREE}",
                            {"id": job_id, "now": db_time(utc_now())}).fetchone() is None:
                return None
            return self._take(conn, job_id, lease, owner or worker_identity())

    def lapsed(self, kind: str, limit: int = 100) -> list[int]:
        """Running jobs of ``kind`` whose lease lapsed (their holder died or stalled), oldest first; a read."""
        return [row[0] for row in self.meta.query(
            "SELECT id FROM jobs WHERE kind = ? AND status = 'running' AND lease_until < ?"
            " ORDER BY id LIMIT ?", (kind, db_time(utc_now()), limit))]

    @staticmethod
    def _take(conn: sqlite3.Connection, job_id: int, lease: timedelta, owner: str) -> Lease:
        now = utc_now()
        return _lease(conn.execute(
            "UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
            " started_at = ?, finished_at = NULL, error = NULL WHERE id = ? RETURNING *",
            (owner, db_time(now + lease), db_time(now), job_id)).fetchone())

    # -- holding and settling -----------------------------------------------------------
    def renew(self, lease: Lease, duration: timedelta = LEASE) -> bool:
        """Extend a held lease; False: it is held no more."""
        return self.meta.execute(f"UPDATE jobs SET lease_until = :until WHERE {_HELD}",
                                 {"until": db_time(utc_now() + duration), **self._cas(lease)}).rowcount == 1

    @contextmanager
    def keep_alive(self, lease: Lease, duration: timedelta = LEASE,
                   every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Renew ``lease`` from a side thread while the (blocking) work of the block runs."""
        def renew() -> bool:
            if self.renew(lease, duration):
                return True
            log.warning("job %s lost its lease", lease.job_id)
            return False

        with beating(renew, every, f"segops-lease-{lease.job_id}", finally_=self.meta.close):
            yield

    def complete(self, lease: Lease, *, conn: sqlite3.Connection | None = None) -> bool:
        """Mark the job done; False: the lease was lost, the caller discards its result. With
        ``conn``, in the caller's transaction (its results commit with the job or not at all)."""
        return self._settle(lease, "UPDATE jobs SET status = 'done', finished_at = :now, lease_owner = NULL,"
                                   f" lease_until = NULL WHERE {_HELD}", {}, conn)

    def holds(self, lease: Lease, conn: sqlite3.Connection | None = None) -> bool:
        """Whether ``lease`` is still held; inside the caller's write transaction, its writes then
        commit only while it is."""
        return (conn or self.meta.connection()).execute(f"SELECT 1 FROM jobs WHERE {_HELD}",
                                                        self._cas(lease)).fetchone() is not None

    def release(self, lease: Lease, *, conn: sqlite3.Connection | None = None) -> bool:
        """Queue a held job again, due now and without an error: its holder did a part of it (e.g. one
        chunk of a send job) and the next claim goes on with the rest. False: lost lease."""
        settled = self._settle(lease, "UPDATE jobs SET status = 'queued', not_before = :now, lease_owner = NULL,"
                                      f" lease_until = NULL WHERE {_HELD}", {}, conn)
        if settled:
            self.wake(lease.kind)
        return settled

    def fail(self, lease: Lease, error: str, *, retry_at: datetime | None = None,
             conn: sqlite3.Connection | None = None) -> bool:
        """Record the failure, or with ``retry_at`` queue the job again, due then. False: lost lease."""
        if retry_at is None:
            sql = ("UPDATE jobs SET status = 'failed', finished_at = :now, error = :error, lease_owner = NULL,"
                   f" lease_until = NULL WHERE {_HELD}")
        else:
            sql = ("UPDATE jobs SET status = 'queued', not_before = :retry_at, error = :error, lease_owner = NULL,"
                   f" lease_until = NULL WHERE {_HELD}")
        params = {"error": error[:2000], "retry_at": db_time(retry_at) if retry_at else None}
        settled = self._settle(lease, sql, params, conn)
        if settled and retry_at is not None:
            self.wake(lease.kind)
        return settled

    def _settle(self, lease: Lease, sql: str, params: dict, conn: sqlite3.Connection | None) -> bool:
        params = {"now": db_time(utc_now()), **params, **self._cas(lease)}
        settled = (conn or self.meta.connection()).execute(sql, params).rowcount == 1
        with self._finished:
            self._finished.notify_all()
        return settled

    @staticmethod
    def _cas(lease: Lease) -> dict[str, Any]:
        return {"id": lease.job_id, "attempt": lease.attempt, "owner": lease.owner}

    # -- reading ------------------------------------------------------------------------
    def get(self, tenant_id: int, job_id: int, kind: str | None = None) -> sqlite3.Row | None:
        row = self.meta.query_one("SELECT * FROM jobs WHERE id = ? AND tenant_id = ?", (job_id, tenant_id))
        return None if row is None or (kind is not None and row["kind"] != kind) else row

    def list(self, tenant_id: int, kind: str, subject: str | None, limit: int,
             offset: int) -> tuple[int, list[sqlite3.Row]]:
        """Newest first."""
        where, params = "tenant_id = ? AND kind = ? AND subject IS ?", (tenant_id, kind, subject)
        count = self.meta.query_one(f"SELECT COUNT(*) FROM jobs WHERE {where}", params)[0]
        rows = self.meta.query(f"SELECT * FROM jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                               (*params, limit, offset))
        return count, rows

    def wait(self, job_id: int, timeout: float) -> sqlite3.Row | None:
        """The job once it has finished, or as it is after ``timeout`` seconds. Woken at once by a
        settle in this process; a worker of another process is noticed by polling."""
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            row = self.meta.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            left = deadline - time.monotonic()
            if row is None or row["status"] in FINISHED or left <= 0:
                return row
            with self._finished:
                self._finished.wait(min(pause, left))
            pause = min(pause * 1.5, 0.25)

    # -- wake-ups -----------------------------------------------------------------------
    def _event(self, kind: str) -> threading.Event:
        with self._events_lock:
            return self._events.setdefault(kind, threading.Event())

    def wake(self, kind: str) -> None:
        """Tell this process's worker of ``kind`` that a job is due (other processes poll)."""
        self._event(kind).set()

    def sleep(self, kind: str, timeout: float) -> None:
        event = self._event(kind)
        event.wait(timeout)
        event.clear()


# A handler settles the job itself (returning what complete/fail returned) when its results must commit with
# it; returning None leaves it to the worker (complete). An exception it lets out fails the job.
Handler = Callable[[Lease], bool | None]


class JobWorker:
    """Runs the jobs of one kind: claim -> ``handler(lease)`` under ``keep_alive`` -> complete/fail,
    and ``tick`` every ``tick_every`` seconds (e.g. a scheduler), in one thread (``start``) or
    synchronously (``run_pending``: the CLI and tests)."""

    def __init__(self, queue: JobQueue, kind: str, handler: Handler, *, lease: timedelta = LEASE,
                 heartbeat: float = HEARTBEAT_SECONDS, poll: float = POLL_SECONDS,
                 tick: Callable[[], Any] | None = None, tick_every: float = 10.0, name: str | None = None):
        self.queue, self.kind, self.handler = queue, kind, handler
        self.lease, self.heartbeat, self.poll = lease, heartbeat, poll
        self.tick, self.tick_every = tick, tick_every
        self.owner = worker_identity()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name or f"segops-{kind}", daemon=True)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def run_pending(self, max_jobs: int | None = None) -> list[Lease]:
        """Run due jobs until none is left (or ``max_jobs``, or ``stop``); returns the leases run."""
        done: list[Lease] = []
        while (max_jobs is None or len(done) < max_jobs) and not self._stop.is_set():
            leases = self.queue.claim(self.kind, self.lease, owner=self.owner)
            if not leases:
                break
            self.run(leases[0])
            done.append(leases[0])
        return done

    def run(self, lease: Lease) -> bool:
        """Run one claimed job; False if its lease was lost meanwhile."""
        with self.queue.keep_alive(lease, self.lease, self.heartbeat):
            try:
                settled = self.handler(lease)
            except Exception as err:  # noqa: BLE001 - recorded on the job; the worker keeps going
                log.exception("%s job %s failed", self.kind, lease.job_id)
                return self.queue.fail(lease, f"{type(err).__name__}: {err}")
        return self.queue.complete(lease) if settled is None else settled

    def start(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self.queue.wake(self.kind)
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            try:
                if self.tick is not None and time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + self.tick_every
                self.run_pending()
            except Exception:  # noqa: BLE001 - keep the worker alive; the next round retries
                log.exception("%s worker round failed", self.kind)
            self.queue.sleep(self.kind, self.poll)
        self.queue.meta.close()
