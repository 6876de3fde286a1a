"""Durable event ingest: dedup, group commit to the write-ahead log, flush to the lake.

Life of a ``POST /api/events/`` batch (validated by ``engine.ingest.parse``):

1. The request hands its columns to the committer thread and awaits a future; the
   event loop never blocks on disk.
2. The committer drains every request queued meanwhile (group commit), drops
   ``(tenant_id, event_id)`` pairs seen within the dedup window, assigns ids to events
   sent without one (UUIDv7), encodes each request as one Arrow IPC record, appends
   the group to the WAL with a single ``fsync`` and only then resolves the futures:
   a 202 means the events are on disk.
3. The flusher (a worker thread, or ``flush_now()``) seals the WAL, appends the
   sealed records to the lake per tenant, then checkpoints the WAL and deletes it.

Exactly-once into the lake:

* The dedup window lives in memory (``engine.ingest.seen_ids.SeenIds``): rebuilt at start
  from the lake (``event_ids_since(now - window)``) and the WAL, then kept current by
  the committer.
* A crash after a lake commit but before the WAL checkpoint replays records that are
  already in the lake; recovery (at start, before anything new is accepted) drops
  the rows whose ids the lake already holds.
* Files that other processes commit (``segops ingest``) are noticed at each flush by
  diffing the tenant's snapshot; their ids join the window and are dropped from the
  rows being flushed, so the lake never holds an id twice even if the API accepted it
  meanwhile (the API's answer then counted it as accepted, not duplicate). Files this
  process wrote in a flush that then failed are treated the same way by its retry.

A record the lake cannot take never holds back the others (``_write_isolating``): a
write that fails because of its rows (not because the store failed:
``storage.lake.is_store_failure``) is bisected down to the rows that fail alone, which go
to the dead-letter directory (``storage.dead_letters``) with the reason; the rest is
written and the WAL checkpointed. The normal path pays nothing for this: one write per
tenant and flush, as before. A replay at start that fails for a store failure does not
stop the process either: ingest answers 503 until a later flush has replayed the WAL.

Memory: the window holds every event id received in the last ``window_days`` (about
120 bytes each, e.g. 1.2 GB for 10M ids); generated ids are not kept.
"""
from __future__ import annotations

import base64
import logging
import os
import queue
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from itertools import compress
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from common.time import iso_utc, naive_utc_now, now_us
from engine.errors import Unavailable
from engine.ingest.parse import EventColumns, ProfileColumns
from engine.ingest.seen_ids import SeenIds
from engine.threads import lower_thread_priority
from storage import duck
from storage.lake import is_store_failure
from storage.manifest import ConcurrentCommitError
from storage.wal import WriteAheadLog

if TYPE_CHECKING:
    from engine.settings import Settings
    from storage.dead_letters import DeadLetters
    from storage.lake import EventLake, FileEntry

log = logging.getLogger(__name__)

_TS = pa.timestamp("us")
EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("tenant_id", pa.int64()), ("user_id", pa.string()),
    ("event_type", pa.string()), ("occurred_at", _TS), ("received_at", _TS), ("properties", pa.string()),
])
PROFILE_SCHEMA = pa.schema([("user_id", pa.string()), ("traits", pa.string()), ("updated_at", _TS)])
# Record kinds; 8 bytes so the Arrow IPC stream after them stays 8-byte aligned.
_EVENTS, _PROFILES = b"EVENTS\0\0", b"PROFILES"
_RECORD_SCHEMAS = {_EVENTS: EVENT_SCHEMA, _PROFILES: PROFILE_SCHEMA.append(pa.field("tenant_id", pa.int64()))}
_MAX_REASON = 1000
_EPOCH_NAIVE = datetime(1970, 1, 1)
_DAY_US = 86_400_000_000

class IngestUnavailable(Unavailable):
    """The ingest path cannot accept writes now (read-only process, WAL backlog)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message, code="ingest_unavailable", retry_after=retry_after)


@dataclass(frozen=True)
class TrackOutcome:
    accepted: int
    duplicates: int
    events: pa.Table  # the accepted events (EVENT_SCHEMA)


def uuid7_batch(count: int, at_us: int) -> list[str]:
    """``count`` UUIDv7 strings for one millisecond: 48-bit time, version and
    variant bits, 74 random bits from one urandom call."""
    ms = f"{at_us // 1000:012x}"
    head = f"{ms[:8]}-{ms[8:]}-7"
    rand = os.urandom(10 * count).hex()
    out = []
    for i in range(0, 20 * count, 20):
        r = rand[i:i + 20]
        out.append(f"{head}{r[:3]}-{'89ab'[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}")
    return out


def encode_record(kind: bytes, table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return kind + sink.getvalue().to_pybytes()


def decode_record(payload: bytes) -> tuple[bytes, pa.Table]:
    return payload[:8], pa.ipc.open_stream(pa.py_buffer(payload)[8:]).read_all()


def _decode_checked(payload: bytes) -> tuple[bytes, int | None, pa.Table]:
    """(kind, tenant_id, table) of a WAL record, its table in the kind's schema; raises if the
    record does not decode to one (a record of another version, a corrupt one)."""
    kind, table = decode_record(payload)
    schema = _RECORD_SCHEMAS[kind]
    if not table.schema.equals(schema):
        table = table.select(schema.names).cast(schema)
    return kind, (table.column("tenant_id")[0].as_py() if table.num_rows else None), table


def _write_isolating(write: Callable[[pa.Table], Any], table: pa.Table) -> tuple[list, list[tuple[pa.Table, str]]]:
    """``write(table)``; if it fails because of its rows, each half again (bisection), so only
    rows that fail alone are left out: (results of the writes that succeeded, [(rows, reason)]).
    k bad rows of n cost about 2k log2(n) writes, and only on failure. A store failure
    propagates (the flush is retried as a whole)."""
    try:
        return [write(table)], []
    except Exception as exc:
        if is_store_failure(exc):
            raise
        if table.num_rows <= 1:
            return [], [(table, _reason(exc))]
    half = table.num_rows // 2
    done_low, bad_low = _write_isolating(write, table.slice(0, half))
    done_high, bad_high = _write_isolating(write, table.slice(half))
    return done_low + done_high, bad_low + bad_high


_PATH = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|(?<![\w.])/)[^\s'\"]*", re.IGNORECASE)


def _reason(exc: Exception) -> str:
    """A dead letter's reason, which its tenant reads (GET /api/events/dead-letters/): the error without
    the server's paths or URLs (a DuckDB message may name a lake file); the whole text goes to the log."""
    log.warning("dead letter: %s: %s", type(exc).__name__, exc)
    return f"{type(exc).__name__}: {_PATH.sub('<path>', str(exc))}"[:_MAX_REASON]


def _iso_us(value: int | None) -> str | None:
    """ISO 8601 of microseconds since the epoch, or None where a datetime cannot show it."""
    try:
        return iso_utc(_EPOCH_NAIVE + timedelta(microseconds=value))
    except (OverflowError, TypeError):
        return None


def _rows_json(table: pa.Table) -> list[dict]:
    """The rows as JSON-ready dicts; timestamps as microseconds (``<name>_us``, exactly what the
    WAL held, whatever the range) and as ISO 8601 (``<name>``, None if out of range)."""
    columns: dict[str, list] = {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            micros = column.cast(_TS).cast(pa.int64()).to_pylist()
            columns[field.name] = [_iso_us(v) for v in micros]
            columns[f"{field.name}_us"] = micros
        else:
            columns[field.name] = column.to_pylist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _dead_rows(kind: str, tenant_id: int, failed: list[tuple[pa.Table, str]]) -> list[dict]:
    return [{"tenant_id": tenant_id, "kind": kind, "reason": reason, "record": row}
            for rows, reason in failed for row in _rows_json(rows)]


def _event_table(tenant_id: int, cols: EventColumns, mask: list[bool] | None, received_us: int) -> pa.Table:
    ids, users, types, occurred, props = (cols.event_ids, cols.user_ids, cols.event_types,
                                          cols.occurred_at, cols.properties)
    if mask is not None:
        ids, users, types, occurred, props = (list(compress(c, mask)) for c in (ids, users, types, occurred, props))
    if None in ids:
        missing = [i for i, v in enumerate(ids) if v is None]
        ids = list(ids)
        for i, new_id in zip(missing, uuid7_batch(len(missing), received_us)):
            ids[i] = new_id
    n = len(ids)
    return pa.Table.from_arrays([
        pa.array(ids, pa.string()),
        pa.repeat(pa.scalar(tenant_id, pa.int64()), n),
        pa.array(users, pa.string()),
        pa.array(types, pa.string()),
        pa.array(occurred, pa.int64()).view(_TS),
        pa.repeat(pa.scalar(received_us, _TS), n),
        pa.array(props, pa.binary()).view(pa.string()),
    ], schema=EVENT_SCHEMA)


def _profile_table(cols: ProfileColumns) -> pa.Table:
    return pa.Table.from_arrays([
        pa.array(cols.user_ids, pa.string()),
        pa.array(cols.traits, pa.binary()).view(pa.string()),
        pa.array(cols.updated_at, pa.int64()).view(_TS),
    ], schema=PROFILE_SCHEMA)


@dataclass
class _Job:
    tenant_id: int
    received_us: int
    future: Future
    events: EventColumns | None = None
    profiles: ProfileColumns | None = None


_STOP = object()


class IngestService:
    """The write path of one process that owns ``<data>/wal``. Build with ``open``."""

    def __init__(self, lake: "EventLake", wal: WriteAheadLog, dead_letters: "DeadLetters", *, window_days: int = 8,
                 flush_interval: float = 1.0, max_wal_bytes: int = 2 << 30, max_group_bytes: int = 256 << 20,
                 flush_threads: int = 1):
        self.lake = lake
        self.dead_letters = dead_letters
        # One DuckDB thread per flush, on the (low-priority) flusher thread: a background
        # flush must not take both cores from request handling (HTTP ingest p99).
        self.flush_threads = flush_threads
        self.wal = wal
        self.seen = SeenIds(window_days)
        self.flush_interval = flush_interval
        self.max_wal_bytes = max_wal_bytes
        self.max_group_bytes = max_group_bytes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_lock = threading.Lock()
        self.watch = LakeWatch(lake)
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()
        self._closed = False
        self._replaying = False  # an earlier run's WAL is not in the lake yet: accept nothing
        self._recover()
        self._committer = threading.Thread(target=self._commit_loop, name="segops-wal-commit", daemon=True)
        self._committer.start()

    @classmethod
    def open(cls, settings: "Settings", lake: "EventLake", dead_letters: "DeadLetters") -> "IngestService":
        """The process's ingest over ``settings.wal_dir``; opening replays what an earlier run left there."""
        if settings.read_only:
            raise IngestUnavailable("this segops process is read-only")
        return cls(lake, WriteAheadLog(settings.wal_dir), dead_letters,
                   flush_interval=settings.flush_interval, max_wal_bytes=settings.wal_max_bytes)

    # -- start-up ---------------------------------------------------------------------
    def _window_start(self) -> datetime:
        return naive_utc_now() - timedelta(days=self.seen.window_days)

    def _recover(self) -> None:
        """Rebuild the dedup window from the lake, then flush what earlier runs left in
        the WAL, minus rows the lake already holds (crash between commit and checkpoint)."""
        today = now_us() // _DAY_US
        since = self._window_start()
        sealed = self.wal.seal()
        if sealed:  # a WAL left over from a long outage may hold ids older than the window
            oldest = min(self.wal.segment_mtime(seq) for seq in sealed) - 86_400
            since = min(since, datetime.fromtimestamp(oldest, timezone.utc).replace(tzinfo=None))
        for tenant_id in self.lake.all_tenants():
            self.watch.baseline(tenant_id)  # before the ids: a file committed between is re-read, never missed
            self.seen.add(tenant_id, self.lake.event_ids_since(tenant_id, since), today)
        if sealed:
            self._replaying = True
            try:
                self._replay(sealed)
            except Exception:  # a store failure: the process starts; flush_now replays later
                log.exception("replaying the WAL failed; ingest answers 503 until a later flush replays it")

    def _replay(self, sealed: list[int]) -> int:
        rows = self._flush_segments(sealed, recovering=True)
        self._replaying = False
        log.info("replayed %d WAL segment(s): %d event(s) flushed to the lake", len(sealed), rows)
        return rows

    # -- accepting --------------------------------------------------------------------
    def _submit(self, job: _Job) -> Future:
        if self._closed:
            raise IngestUnavailable("ingest is shutting down", retry_after=1)
        if self._replaying:
            raise IngestUnavailable("replaying the write-ahead log of an earlier run; retry shortly", retry_after=5)
        if self.wal.pending_bytes > self.max_wal_bytes:
            raise IngestUnavailable("the write-ahead log is behind on flushing; retry shortly", retry_after=5)
        # Running from now on: a request that goes away cannot cancel it, so the committer
        # can always resolve it (the events may be committed regardless).
        job.future.set_running_or_notify_cancel()
        self._queue.put(job)
        return job.future

    def submit_events(self, tenant_id: int, columns: EventColumns, received_us: int) -> Future:
        """Future of a TrackOutcome, resolved once the accepted events are durable."""
        return self._submit(_Job(tenant_id, received_us, Future(), events=columns))

    def submit_profiles(self, tenant_id: int, columns: ProfileColumns, received_us: int) -> Future:
        """Future of the number of identify items made durable."""
        return self._submit(_Job(tenant_id, received_us, Future(), profiles=columns))

    def _commit_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            group = [job]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_Job]) -> None:
        payloads, results, claims = [], [], []
        try:
            for job in group:
                day = job.received_us // _DAY_US
                if job.events is not None:
                    ids = job.events.event_ids
                    mask, claimed = self.seen.claim(job.tenant_id, ids, day)
                    claims.append((job.tenant_id, claimed, day))
                    table = _event_table(job.tenant_id, job.events, mask, job.received_us)
                    if table.num_rows:  # all duplicates: nothing new to make durable
                        payloads.append(encode_record(_EVENTS, table))
                    results.append(TrackOutcome(table.num_rows, len(ids) - table.num_rows, table))
                else:
                    table = _profile_table(job.profiles)
                    table = table.append_column("tenant_id", pa.repeat(pa.scalar(job.tenant_id, pa.int64()),
                                                                         table.num_rows))
                    payloads.append(encode_record(_PROFILES, table))
                    results.append(table.num_rows)
            self.wal.append(payloads)
        except BaseException as exc:  # nothing of this group is acknowledged
            for tenant_id, ids, day in claims:
                self.seen.release(tenant_id, ids, day)
            log.exception("WAL commit failed")
            if isinstance(exc, OSError):  # e.g. disk full: the client should retry later
                exc = IngestUnavailable(f"the write-ahead log could not be written ({exc})", retry_after=5)
            for job in group:
                job.future.set_exception(exc)
            return
        for job, result in zip(group, results):
            job.future.set_result(result)

    # -- flushing ---------------------------------------------------------------------
    def flush_now(self) -> int:
        """Move everything committed so far into the lake; returns events written."""
        with self._flush_lock:
            sealed = self.wal.seal()
            if not sealed:
                return 0
            return self._replay(sealed) if self._replaying else self._flush_segments(sealed)

    def _flush_segments(self, sealed: list[int], recovering: bool = False) -> int:
        """Flush ``sealed`` in groups of about ``max_group_bytes``, checkpointing after each."""
        written, group, size = 0, [], 0
        for seq in sealed:
            group.append(seq)
            size += self.wal.segment_bytes_of(seq)
            if size >= self.max_group_bytes or seq == sealed[-1]:
                written += self._flush_group(group, recovering)
                self.wal.checkpoint(group[-1])
                group, size = [], 0
        self.seen.expire(now_us() // _DAY_US)
        return written

    def _flush_group(self, seqs: list[int], recovering: bool) -> int:
        """Write the records of ``seqs`` to the lake; what the lake cannot take (and records that
        do not decode) goes to the dead letters, durably, before the caller checkpoints."""
        events: dict[int, list[pa.Table]] = defaultdict(list)
        profiles: dict[int, list[pa.Table]] = defaultdict(list)
        dead: list[dict] = []
        for seq in seqs:
            for payload in self.wal.records(seq):
                try:
                    kind, tenant_id, table = _decode_checked(payload)
                except Exception as exc:
                    dead.append({"tenant_id": None, "kind": "wal_record", "wal_segment": seq,
                                 "reason": _reason(exc),
                                 "record": {"payload_base64": base64.b64encode(payload).decode()}})
                    continue
                if table.num_rows:
                    (events if kind == _EVENTS else profiles)[tenant_id].append(table)
        written = 0
        committed: dict[int, list[str]] = defaultdict(list)
        today = now_us() // _DAY_US
        for tenant_id, tables in events.items():
            table = pa.concat_tables(tables)
            if recovering:  # already in the lake if the last run crashed after its commit
                in_lake = self.seen.contains_many(tenant_id, table.column("event_id").to_pylist())
                table = table.filter(pc.invert(pa.array(in_lake, pa.bool_())))
            table = self._drop_ids_committed_elsewhere(tenant_id, table)
            if table.num_rows:
                keys, failed = _write_isolating(
                    partial(append_retrying, self.lake, tenant_id, threads=self.flush_threads), table)
                committed[tenant_id].extend(key for part in keys for key in part)
                written += table.num_rows - sum(rows.num_rows for rows, _ in failed)
                dead.extend(_dead_rows("event", tenant_id, failed))
            if recovering:  # now, not before: a retry after a failed write must not think them written
                self.seen.add(tenant_id, table.column("event_id").to_pylist(), today)
        for tenant_id, tables in profiles.items():
            table = pa.concat_tables(tables).select(["user_id", "traits", "updated_at"])
            _, failed = _write_isolating(partial(self.lake.upsert_profiles, tenant_id), table)
            dead.extend(_dead_rows("profile", tenant_id, failed))
        if dead:
            self.dead_letters.write(dead)
            log.error("%d record(s) the lake could not take were moved to %s", len(dead), self.dead_letters.dir)
        for tenant_id, keys in committed.items():  # only now: a retry of a failed flush re-reads them
            self.watch.own(tenant_id, keys)
        return written

    def _drop_ids_committed_elsewhere(self, tenant_id: int, table: pa.Table) -> pa.Table:
        """Rows of ``table`` minus ids in lake files this process has not seen yet
        (another process's commit, or compaction's rewrite of known rows)."""
        ids = self.watch.new_ids(tenant_id, self._window_start())
        if ids is None:
            return table
        self.seen.add(tenant_id, ids.to_pylist(), now_us() // _DAY_US)
        return table.filter(pc.invert(pc.is_in(table.column("event_id"), value_set=ids)))

    # -- worker -----------------------------------------------------------------------
    def start_flusher(self) -> None:
        if self._flusher is not None:
            return
        self._flusher = threading.Thread(target=self._flush_loop, name="segops-flusher", daemon=True)
        self._flusher.start()

    @property
    def threads(self) -> list[threading.Thread]:
        """The committer and (once started) the flusher."""
        return [self._committer, *([self._flusher] if self._flusher is not None else [])]

    def _flush_loop(self) -> None:
        lower_thread_priority()
        delay = self.flush_interval
        while not self._stop_flusher.wait(delay):
            try:
                self.flush_now()
                delay = self.flush_interval
            except Exception:  # the WAL keeps everything; try again with back-off
                log.exception("flush to the lake failed; retrying")
                delay = min(max(delay * 2, 1.0), 30.0)

    def close(self) -> None:
        """Stop accepting, drain the committer; a process that ran the flusher flushes
        once more. The WAL keeps anything unflushed for the next start."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._committer.join()
        while True:  # a request that raced with close: refuse it rather than leave it waiting
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.future.set_exception(IngestUnavailable("ingest is shutting down", retry_after=1))
        if self._flusher is not None:
            self._stop_flusher.set()
            self._flusher.join()
            try:
                self.flush_now()
            except Exception:
                log.exception("final flush failed; the WAL will be replayed at the next start")
        self.wal.close()
        self.watch.close()


def append_retrying(lake: "EventLake", tenant_id: int, table: pa.Table, attempts: int = 5,
                    threads: int | None = None) -> list[str]:
    """``lake.append_events``, retried as ``commit_retrying`` does."""
    return commit_retrying(lambda: lake.append_events(tenant_id, table, threads=threads), attempts)


def commit_retrying(append: Callable[[], list[str]], attempts: int = 5) -> list[str]:
    """``append()`` (a lake append), retried when another process committed the same
    manifest sequence first (nothing of ours was committed then, so a retry is safe)."""
    for attempt in range(1, attempts):
        try:
            return append()
        except ConcurrentCommitError:
            time.sleep(0.05 * attempt)
    return append()


class LakeWatch:
    """Which of a tenant's committed lake files this process has accounted for, so ids
    committed by someone else (``segops ingest`` while the server runs) can be read and
    excluded before appending.

    Compaction also swaps in new files, but of rows already accounted for: a day whose
    one new file holds exactly the rows of the accounted-for files that left it is such a
    rewrite and is not read again (any foreign rows merged in would make it larger)."""

    def __init__(self, lake: "EventLake"):
        self.lake = lake
        self._known: dict[int, dict[str, "FileEntry"]] = {}
        self._duck = None

    def baseline(self, tenant_id: int) -> None:
        """Everything committed now is accounted for."""
        self._known[tenant_id] = {e.key: e for e in self.lake.snapshot(tenant_id).entries}

    def own(self, tenant_id: int, keys: Iterable[str]) -> None:
        """Files this process just committed."""
        keys = set(keys)
        known = self._known.setdefault(tenant_id, {})
        known.update((e.key, e) for e in self.lake.snapshot(tenant_id).entries if e.key in keys)

    def new_ids(self, tenant_id: int, since: datetime) -> pa.Array | None:
        """Distinct event ids of files committed by others since the last look (received
        at or after ``since``), or None if there are none."""
        snapshot = self.lake.snapshot(tenant_id)
        known = self._known.get(tenant_id, {})
        current = {e.key: e for e in snapshot.entries}
        self._known[tenant_id] = current
        new = [e for key, e in current.items() if key not in known]
        if not new:
            return None
        left_rows: dict = defaultdict(int)
        for key, entry in known.items():
            if key not in current:
                left_rows[entry.day] += entry.rows
        new_per_day = Counter(e.day for e in new)
        paths = [e.path for e in new if e.max_received_at >= since
                 and not (new_per_day[e.day] == 1 and left_rows[e.day] == e.rows)]
        if not paths:
            return None
        if self._duck is None:
            self._duck = duck.connect(self.lake.store, threads=2)
        table = self._duck.execute("SELECT DISTINCT event_id FROM read_parquet(?)", [paths]).to_arrow_table()
        return table.column(0).combine_chunks()

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None

