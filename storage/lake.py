"""The event lake: per-tenant Parquet files made visible atomically through manifests.

Layout (keys in the ObjectStore)::

    events/tenant_id=<id>/event_date=YYYY-MM-DD/part-<time>-<rand>.parquet
    events/_manifests/tenant_id=<id>/<seq:020d>.json       # highest seq = current snapshot
    profiles/tenant_id=<id>/profiles-<seq:012d>.parquet      # base
    profiles/tenant_id=<id>/delta-<seq:012d>.parquet         # users changed since the base
    profiles/_manifests/tenant_id=<id>/<seq:020d>.json

Queries read only the files a snapshot lists, so a stray, half-written or
compacted-away file in a partition directory never changes a result. Data files
are written completely (scratch file, then atomic put) before the manifest that
lists them is committed; files a commit stops listing (compaction, profile
rewrites) are deleted only ``grace_seconds`` later, so a query that took the
previous snapshot can still read them.

Events file schema (``tenant_id`` BIGINT and ``event_date`` DATE come from the hive path;
read with ``hive_partitioning=true``)::

    event_id VARCHAR, user_id VARCHAR, event_type VARCHAR,
    occurred_at TIMESTAMP, received_at TIMESTAMP   -- naive UTC, microseconds
    properties VARCHAR                             -- the original JSON object, lossless
    p_<name> DOUBLE | VARCHAR | BOOLEAN            -- typed top-level properties

Appends write rows in arrival order (zstd level 1, row groups of 120Ki rows):
sorting costs more than the whole rest of an append. Compaction rewrites each
day sorted by (user_id, occurred_at) (zstd), so per-user reads of compacted data
skip row groups by min/max statistics. Files are Parquet v2 pages (smaller and
faster to write and scan than v1 here). Property typing and the type-conflict
rule: ``storage/properties.py``. Profiles: ``storage/profiles.py``. What readers
get: ``storage/snapshots.py``.

One process writes a lake (the manifest commit refuses a second writer's racing
commit); any number of processes read it.
"""
from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from functools import cached_property

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.beat import beating
from common.time import naive_utc
from storage import duck
from storage.manifest import ConcurrentCommitError, ManifestLog
from storage.objectstore import ObjectStore, open_store
from storage.profiles import (PROFILE_FILE_COLUMNS, delta_rows_sql, merge_profiles, normalize_profiles_input,
                              stored_profiles_sql)
from storage.properties import Catalog, discover, typed_select
from storage.snapshots import CompactionResult, EventsSnapshot, FileEntry, ProfilesSnapshot, entry_from_json, entry_json

__all__ = ["EventLake", "EventsSnapshot", "ProfilesSnapshot", "FileEntry", "CompactionResult", "is_store_failure"]

EVENT_COLUMNS = ("event_id", "tenant_id", "user_id", "event_type", "occurred_at", "received_at", "properties")
_FILE_COLUMNS = ["event_id", "user_id", "event_type", "occurred_at", "received_at", "properties"]
ROW_GROUP_SIZE = 256 * 1024
# Appends write smaller row groups (still >= 100k rows), and no larger than the append's
# largest day needs (``EventLake._append_row_group_size``): DuckDB's partitioned COPY (a
# writer per day) is faster the smaller its limit. Compaction rewrites with ROW_GROUP_SIZE.
APPEND_ROW_GROUP_SIZE = 120 * 1024
_VECTOR_ROWS = 2048  # DuckDB's vector size: row group sizes are rounded up to it
_TS = pa.timestamp("us")
_TENANT_RE = re.compile(r"tenant_id=(\d+)/")
# An identify flush rewrites the profiles delta, and the base once the delta outgrows this
# share of it (1M profiles, flushes of 1,000 identifies: 0.26-0.29 s each instead of 2.3 s
# for rewriting the whole table; a trait count over the largest delta costs 6.5-7.5x one
# file, 25-27 ms instead of 3.6-3.8: ``benchmarks/bench_profiles.py``).
PROFILE_DELTA_FRACTION = 8
PROFILE_DELTA_MIN_ROWS = 50_000
PINS_PREFIX = "_pins/"  # EventLake.pin: files a long job still reads
PIN_HOLD_SECONDS = 300.0
SPARK_SCRATCH_PREFIX = "_scratch/spark/"  # the Spark backend's write prefix (backends.spark.SCRATCH_PREFIX)
SCRATCH_MAX_AGE_SECONDS = 86_400.0  # a Spark write's leftovers older than this are garbage
log = logging.getLogger("segops.lake")


def is_store_failure(exc: BaseException) -> bool:
    """Does this exception of a lake write say nothing about the rows being written? (The disk,
    the object store, memory or a racing writer failed: retry later.) Any other failure of a
    write is taken to be caused by its rows; ``engine.ingest.service`` then isolates them."""
    if isinstance(exc, (OSError, MemoryError, ConcurrentCommitError, duckdb.OperationalError,
                        duckdb.InterruptException, duckdb.FatalException)):
        return True
    from botocore.exceptions import BotoCoreError, ClientError  # only S3 stores raise these

    return isinstance(exc, (BotoCoreError, ClientError))


class EventLake:
    """Writer and snapshot reader of the lake. One writing process per lake.

    ``grace_seconds``: how long a file a commit stopped listing stays readable before
    it is deleted (also the minimum age of an orphaned file before garbage collection).
    ``clock``: seconds since the epoch (tests advance it). ``read_only``: refuse writes.
    ``profile_delta_min_rows``, ``profile_delta_fraction``: when an identify flush
    rewrites the profiles base instead of the delta (``upsert_profiles``).
    """

    def __init__(self, store: ObjectStore, *, grace_seconds: float = 600.0, clock=time.time,
                 read_only: bool = False, threads: int | None = None,
                 profile_delta_min_rows: int = PROFILE_DELTA_MIN_ROWS,
                 profile_delta_fraction: int = PROFILE_DELTA_FRACTION):
        self.store = store
        self.profile_delta_min_rows = profile_delta_min_rows
        self.profile_delta_fraction = profile_delta_fraction
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.read_only = read_only
        self._threads = threads
        self._logs: dict[tuple[str, int], ManifestLog] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = defaultdict(threading.Lock)
        self._meta_lock = threading.Lock()
        self._snapshots: dict[tuple[int, int], EventsSnapshot] = {}
        self._ducks: dict[int, duckdb.DuckDBPyConnection] = {}

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "EventLake":
        """The lake described by engine Settings (local dir or s3://)."""
        kwargs.setdefault("read_only", settings.read_only)
        return cls(open_store(settings), **kwargs)

    def __repr__(self) -> str:
        return f"EventLake({self.store!r})"

    # -- plumbing -------------------------------------------------------------------
    @cached_property
    def _duck(self) -> duckdb.DuckDBPyConnection:
        return duck.connect(self.store, threads=self._threads)

    def _cursor(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one operation (cursors share the database).
        ``threads`` other than the lake's: a cursor of a database with that many threads
        (DuckDB's thread count is per database, not per cursor)."""
        if threads is None or threads == self._threads:
            return self._duck.cursor()
        with self._meta_lock:
            con = self._ducks.get(threads)
            if con is None:
                con = self._ducks[threads] = duck.connect(self.store, threads=threads)
        return con.cursor()

    def _log(self, kind: str, tenant_id: int) -> ManifestLog:
        with self._meta_lock:
            log = self._logs.get((kind, tenant_id))
            if log is None:
                log = self._logs[(kind, tenant_id)] = ManifestLog(
                    self.store, f"{kind}/_manifests/tenant_id={tenant_id}/")
            return log

    def _lock(self, kind: str, tenant_id: int) -> threading.Lock:
        with self._meta_lock:
            return self._locks[(kind, tenant_id)]

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError("this EventLake is read-only")

    def _commit(self, kind: str, tenant_id: int, prev: dict | None, doc: dict,
                retire: list[str] = ()) -> None:
        """Commit ``doc`` as the next manifest; carry over retired files, retire ``retire``,
        and delete retired files whose grace period is over (after the commit)."""
        now = self.clock()
        retired = list(prev.get("retired", [])) if prev else []
        retired += [{"key": key, "at": now} for key in retire]
        expired = [r["key"] for r in retired if now - r["at"] >= self.grace_seconds]
        pinned = self._pinned_keys(tenant_id) if expired else set()
        expired = [key for key in expired if key not in pinned]
        doc["retired"] = [r for r in retired if now - r["at"] < self.grace_seconds or r["key"] in pinned]
        doc["tenant_id"] = tenant_id
        doc["committed_at"] = now
        seq = (prev or {}).get("seq", 0) + 1
        doc["seq"] = seq
        log = self._log(kind, tenant_id)
        log.commit(seq, doc)
        for key in expired:
            self.store.delete(key)
        if seq % 10 == 0:
            log.prune()

    # -- events: write --------------------------------------------------------------
    def append_events(self, tenant_id: int, table: pa.Table, *, threads: int | None = None) -> list[str]:
        """Write ``table`` (event_id, tenant_id, user_id, event_type, occurred_at,
        received_at, properties JSON text) as one Parquet file per day touched and commit
        them in one manifest swap. Returns the committed keys. Every row's tenant_id must
        equal ``tenant_id``. Dedup is the caller's job: appended rows are all kept.
        ``threads``: DuckDB threads for this write (default: the lake's); the API's
        background flusher uses 1 so it runs entirely on its own low-priority thread."""
        self._check_writable()
        tenant_id = int(tenant_id)
        batch = _normalize_events(table, tenant_id)
        if batch.num_rows == 0:
            return []
        batch = batch.append_column("__rn", pa.array(np.arange(batch.num_rows, dtype=np.int64)))
        cur = self._cursor(threads)
        try:
            cur.register("__batch", batch)
            return self._append(cur, tenant_id, "__batch", "__rn")
        finally:
            cur.close()

    def append_relation(self, tenant_id: int, con: duckdb.DuckDBPyConnection, relation: str,
                        order_column: str) -> list[str]:
        """``append_events`` for rows already in DuckDB: the table or view ``relation``
        of ``con`` (a connection able to read this lake: ``duck.connect(lake.store)``), so
        a bulk load goes from its validated rows to the lake's files in one pass, without
        leaving DuckDB. ``relation`` must have the file columns (event_id, user_id,
        event_type, properties VARCHAR, occurred_at, received_at naive UTC TIMESTAMP), none
        NULL (other columns are ignored), and ``order_column``: a unique input order for
        the first-kind rule of property typing. ``relation`` is ours, never user input."""
        self._check_writable()
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {relation})").fetchall())
        wrong = [c for c in _FILE_COLUMNS if types.get(c) != duck.EVENTS_BASE_SQL_TYPES[c]]
        wrong += [order_column] if order_column not in types else []
        if wrong:
            raise ValueError(f"{relation} lacks columns or has other types: {wrong} ({types})")
        return self._append(con, int(tenant_id), relation, order_column)

    def _append(self, cur: duckdb.DuckDBPyConnection, tenant_id: int, relation: str, order_column: str) -> list[str]:
        """Type the properties of ``relation``'s rows, write them (``_write_days``) and
        commit the files with the grown catalog; nothing is committed for no rows."""
        with self._lock("events", tenant_id):
            _, doc = self._log("events", tenant_id).latest()
            catalog = _catalog(doc)
            try:
                catalog = discover(cur, relation, "properties", order_column, catalog, "p_")
                sql, params = typed_select(
                    catalog, f"SELECT *, CAST(occurred_at AS DATE) AS event_date FROM {relation}",
                    "properties", _FILE_COLUMNS + ["event_date"])
                entries = self._write_days(cur, tenant_id, relation, sql, params)
            except duckdb.InvalidInputException as exc:
                raise ValueError(f"properties: {exc}") from exc
            if not entries:
                return []
            files = (doc["files"] if doc else []) + [entry_json(e) for e in entries]
            self._commit("events", tenant_id, doc, {"files": files, **_catalog_json(catalog)})
        return [e.key for e in entries]

    def _write_days(self, cur: duckdb.DuckDBPyConnection, tenant_id: int, relation: str, sql: str,
                    params: dict) -> list[FileEntry]:
        """Write the typed rows of ``relation`` (query ``sql``) as one file per event_date
        (one partitioned COPY) and store them."""
        days = sorted(cur.execute(
            "SELECT CAST(occurred_at AS DATE), min(occurred_at), max(occurred_at), min(received_at), "
            f"max(received_at), count(*) FROM {relation} GROUP BY ALL").fetchall())
        if not days:
            return []
        out_dir = self.store.new_scratch_path()
        out_dir.mkdir()
        try:
            cur.execute(f"COPY ({sql}) TO {duck.sql_literal(str(out_dir))} "
                        f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARQUET_VERSION v2, "
                        f"ROW_GROUP_SIZE {self._append_row_group_size(max(d[-1] for d in days))}, "
                        f"PARTITION_BY (event_date))", params)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            entries, moves = [], []
            for day, min_occ, max_occ, min_rec, max_rec, rows in days:
                # Normally one file per partition; the ranges are per day, so never too narrow.
                day_dir = out_dir / f"event_date={day.isoformat()}"
                parts = sorted(day_dir.iterdir()) if day_dir.is_dir() else []
                counts = [pq.read_metadata(part).num_rows for part in parts]
                if sum(counts) != rows:  # never commit a partial batch
                    raise RuntimeError(f"partitioned write of {day} holds {sum(counts)} rows, expected {rows}")
                for part, part_rows in zip(parts, counts):
                    key = (f"events/tenant_id={tenant_id}/event_date={day.isoformat()}/"
                           f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet")
                    size = part.stat().st_size
                    moves.append((key, part))
                    entries.append(FileEntry(key, self.store.duckdb_path(key), day, part_rows, size,
                                             min_occ, max_occ, min_rec, max_rec))
            self.store.put_files(moves)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        return entries

    @staticmethod
    def _append_row_group_size(largest_day_rows: int) -> int:
        """ROW_GROUP_SIZE of an append whose largest day has this many rows: no more than
        that day needs (rounded up to whole vectors), at most APPEND_ROW_GROUP_SIZE.

        Why not always APPEND_ROW_GROUP_SIZE: DuckDB 1.5's Parquet writer writes a
        thread's share of a partition as a row group at once when it holds half the limit
        or more (``ParquetWriteCombine``); smaller shares wait for the end of the
        statement, where the partitions are written one after another (the COPY then uses
        1.5 of 2 cores instead of 1.9). With a limit sized to the days, most of a many-day
        append is written while both threads work: bulk ingest of 2M demo events over 183
        days is 1.13-1.26x faster (``benchmarks/bench_ingest.py``, "vs row groups of 120Ki").
        The price: a day whose two threads' shares each reach half the limit gets two row
        groups instead of one (183 days: 189-203 row groups instead of 183-192; 1M events
        over 30 even days: 52 instead of 30), so a scan of freshly appended files is slower
        (``bench_lake_scan``, 1M-row appends: 2.4-2.6x one file instead of 2.0x) until
        compaction rewrites each day as one sorted file with ROW_GROUP_SIZE."""
        return min(APPEND_ROW_GROUP_SIZE, -(-max(largest_day_rows, 1) // _VECTOR_ROWS) * _VECTOR_ROWS)

    def _write_parquet(self, cur: duckdb.DuckDBPyConnection, query: str, key: str, order_by: str) -> int:
        """Write the rows of ``query`` sorted by ``order_by`` to ``key`` atomically; returns bytes."""
        return duck.copy_to_store(cur, f"SELECT * FROM ({query}) ORDER BY {order_by}", self.store, key,
                                  options=f"FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2, "
                                          f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}")

    # -- events: read ---------------------------------------------------------------
    def snapshot(self, tenant_id: int) -> EventsSnapshot:
        """The current committed state of a tenant (an empty snapshot if none)."""
        tenant_id = int(tenant_id)
        seq, doc = self._log("events", tenant_id).latest()
        cached = self._snapshots.get((tenant_id, seq))
        if cached is not None:
            return cached
        if doc is None:
            return EventsSnapshot(tenant_id, 0, (), {}, ())
        entries = tuple(sorted((entry_from_json(e, self.store) for e in doc["files"]),
                               key=lambda e: (e.day, e.key)))
        snap = EventsSnapshot(tenant_id, seq, tuple(e.path for e in entries),
                              dict(Catalog.from_json(doc["catalog"]).columns), entries)
        with self._meta_lock:
            self._snapshots = {k: v for k, v in self._snapshots.items() if k[0] != tenant_id}
            self._snapshots[(tenant_id, seq)] = snap
        return snap

    def all_tenants(self) -> list[int]:
        """Tenants that have committed events or profiles."""
        tenants = set()
        for kind in ("events", "profiles"):
            for key in self.store.list(f"{kind}/_manifests/"):
                match = _TENANT_RE.search(key)
                if match:
                    tenants.add(int(match.group(1)))
        return sorted(tenants)

    def event_ids_since(self, tenant_id: int, since: datetime) -> set[str]:
        """event_ids of events received at or after ``since`` (UTC), reading only the
        event_id/received_at columns of files whose received_at range reaches ``since``."""
        since = naive_utc(since)
        paths = [e.path for e in self.snapshot(tenant_id).entries if e.max_received_at >= since]
        if not paths:
            return set()
        cur = self._cursor()
        try:
            rows = cur.execute("SELECT event_id FROM read_parquet(?) WHERE received_at >= ?",
                               [paths, since]).to_arrow_table()
        finally:
            cur.close()
        return set(rows.column(0).to_pylist())

    # -- compaction and garbage -----------------------------------------------------
    def compact(self, tenant_id: int, *, target_bytes: int = 64 << 20, settle_seconds: float = 600.0,
                max_sorted_per_day: int = 8) -> CompactionResult:
        """Merge each day's small files (under ``target_bytes``) into one file sorted by
        (user_id, occurred_at), swapped in with one manifest commit per day. Replaced files
        stay readable for ``grace_seconds``; appends may run concurrently (they only add
        files).

        A day still receiving events (its latest event arrived less than
        ``settle_seconds`` ago, typically today) is not rewritten whole on every run:
        only its unsorted appended files are merged, into one more sorted file, and the
        whole day is merged once it holds ``max_sorted_per_day`` small sorted files or
        has settled. So each event is rewritten a bounded number of times however often
        maintenance runs, and every day converges to one large sorted file."""
        self._check_writable()
        tenant_id = int(tenant_id)
        before = self.snapshot(tenant_id)
        now = datetime.fromtimestamp(self.clock(), timezone.utc).replace(tzinfo=None)
        by_day: dict[date, list[FileEntry]] = defaultdict(list)
        latest: dict[date, datetime] = {}
        for entry in before.entries:
            latest[entry.day] = max(latest.get(entry.day, entry.max_received_at), entry.max_received_at)
            if entry.bytes < target_bytes or not entry.is_sorted:
                by_day[entry.day].append(entry)
        compacted = []
        for day, small in sorted(by_day.items()):
            unsorted = [e for e in small if not e.is_sorted]
            settled = (now - latest[day]).total_seconds() >= settle_seconds
            if not settled and len(small) - len(unsorted) < max_sorted_per_day:
                small = unsorted
            if (len(small) >= 2 or (small and not small[0].is_sorted)) and self._compact_day(tenant_id, day, small):
                compacted.append(day)
        return CompactionResult(tenant_id, len(before.entries), len(self.snapshot(tenant_id).entries),
                                tuple(compacted))

    def _compact_day(self, tenant_id: int, day: date, small: list[FileEntry]) -> bool:
        key = (f"events/tenant_id={tenant_id}/event_date={day.isoformat()}/"
               f"part-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-c{uuid.uuid4().hex[:11]}.parquet")
        rows = sum(e.rows for e in small)
        cur = self._cursor()
        try:
            paths = ", ".join(duck.sql_literal(e.path) for e in small)
            size = self._write_parquet(
                cur, f"SELECT * FROM read_parquet([{paths}], union_by_name=true)", key,
                order_by="user_id, occurred_at")
            written = cur.execute("SELECT count(*) FROM read_parquet(?)",
                                  [self.store.duckdb_path(key)]).fetchone()[0]
        finally:
            cur.close()
        if written != rows:  # never swap in a file that lost or gained rows
            self.store.delete(key)
            raise RuntimeError(f"compaction of {day} wrote {written} rows, expected {rows}")
        merged = FileEntry(key, self.store.duckdb_path(key), day, rows, size,
                           min(e.min_occurred_at for e in small), max(e.max_occurred_at for e in small),
                           min(e.min_received_at for e in small), max(e.max_received_at for e in small),
                           is_sorted=True)
        replaced = {e.key for e in small}
        with self._lock("events", tenant_id):
            _, doc = self._log("events", tenant_id).latest()
            if not replaced <= {f["key"] for f in doc["files"]}:  # raced with another compaction
                self.store.delete(key)
                return False
            files = [f for f in doc["files"] if f["key"] not in replaced] + [entry_json(merged)]
            self._commit("events", tenant_id, doc, {"files": files, **_catalog_json(_catalog(doc))},
                         retire=sorted(replaced))
        return True

    # -- snapshot pins --------------------------------------------------------------
    def pin(self, name: str, until: float, *, events: EventsSnapshot | None = None,
            profiles: ProfilesSnapshot | None = None) -> None:
        """Keep the files of these snapshots (one tenant's) until ``until`` (``clock`` seconds),
        whatever commits retire meanwhile: a job reading them longer than ``grace_seconds`` (a
        Spark computation) renews its pin. ``name`` is the pin's (one object per name and tenant,
        ``_pins/tenant_id=<T>/<name>.json``); pinning again replaces it."""
        snapshot = events or profiles
        keys = [e.key for e in events.entries] if events is not None else []
        if profiles is not None:
            keys += [k for k in (profiles.base_key, profiles.delta_key) if k]
        self.store.put_bytes(_pin_key(snapshot.tenant_id, name), orjson.dumps({"until": until, "keys": keys}))

    def unpin(self, tenant_id: int, name: str) -> None:
        self.store.delete(_pin_key(tenant_id, name))

    @contextmanager
    def pinned(self, name: str, events: EventsSnapshot | None = None, profiles: ProfilesSnapshot | None = None, *,
               hold: float = PIN_HOLD_SECONDS) -> Iterator[None]:
        """The snapshots pinned while the block runs: for ``hold`` seconds at a time, renewed from a
        side thread every ``hold / 5`` (a process that dies leaves a pin that lapses within ``hold``),
        removed at the end."""
        self.pin(name, self.clock() + hold, events=events, profiles=profiles)

        def renew() -> None:
            try:
                self.pin(name, self.clock() + hold, events=events, profiles=profiles)
            except Exception:  # noqa: BLE001 - the pin still holds until it lapses; retry next beat
                log.exception("renewing lake pin %s failed", name)

        try:
            with beating(renew, hold / 5, f"segops-pin-{name}"):
                yield
        finally:
            self.unpin((events or profiles).tenant_id, name)

    def _pinned_keys(self, tenant_id: int) -> set[str]:
        """The files live pins of the tenant hold (lapsed pins are deleted on the way)."""
        keys: set[str] = set()
        for key in self.store.list(f"{PINS_PREFIX}tenant_id={tenant_id}/"):
            try:
                pin = orjson.loads(self.store.get_bytes(key))
            except FileNotFoundError:  # unpinned meanwhile
                continue
            if pin["until"] > self.clock():
                keys.update(pin["keys"])
            elif not self.read_only:
                self.store.delete(key)
        return keys

    def collect_garbage(self, tenant_id: int | None = None) -> int:
        """Delete retired files past the grace period, Parquet files no manifest ever
        committed (crashed writes) once older than the grace period, and old manifests;
        files a live pin holds stay. Without ``tenant_id`` also what a crashed Spark write left
        under ``_scratch/spark/`` more than a day ago. Returns the number of data files deleted."""
        self._check_writable()
        deleted = 0
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        if tenant_id is None:
            for info in self.store.list_info(SPARK_SCRATCH_PREFIX):
                if (now - info.modified).total_seconds() >= SCRATCH_MAX_AGE_SECONDS:
                    self.store.delete(info.key)
        for tenant in ([int(tenant_id)] if tenant_id is not None else self.all_tenants()):
            pinned = self._pinned_keys(tenant)
            for kind in ("events", "profiles"):
                with self._lock(kind, tenant):
                    _, doc = self._log(kind, tenant).latest()
                    if doc is not None:
                        expired = [r for r in doc["retired"] if self.clock() - r["at"] >= self.grace_seconds
                                   and r["key"] not in pinned]
                        if expired:
                            carry = {k: v for k, v in doc.items() if k not in ("retired", "seq")}
                            self._commit(kind, tenant, doc, carry)
                            deleted += len(expired)
                        _, doc = self._log(kind, tenant).latest()
                    known = _referenced_keys(doc)
                    for info in self.store.list_info(f"{kind}/tenant_id={tenant}/"):
                        if (info.key not in known and info.key not in pinned
                                and (now - info.modified).total_seconds() >= self.grace_seconds):
                            self.store.delete(info.key)
                            deleted += 1
                self._log(kind, tenant).prune()
        return deleted

    # -- profiles -------------------------------------------------------------------
    def upsert_profiles(self, tenant_id: int, table: pa.Table | list[dict]) -> str:
        """Merge identify traits (user_id, traits JSON object text or dict, updated_at):
        per (user, trait) the value with the latest updated_at wins; on equal times the
        later write wins (this call over stored values, a later row over an earlier one).

        Writes the merged rows of the batch's users together with the rest of the delta
        as the tenant's new delta file, so a flush costs the size of the delta, not of the
        table; once the delta holds more than ``1 / profile_delta_fraction`` of the base's
        rows (and more than ``profile_delta_min_rows``), the base is rewritten with it and
        the delta starts empty. Commits and returns the key of the file written."""
        self._check_writable()
        tenant_id = int(tenant_id)
        batch = normalize_profiles_input(table)
        with self._lock("profiles", tenant_id):
            _, doc = self._log("profiles", tenant_id).latest()
            if batch.num_rows == 0 and doc is not None:
                return doc["key"]
            catalog = _catalog(doc)
            base_key = doc["key"] if doc and doc.get("key") else None
            delta_key = (doc.get("delta") or {}).get("key") if doc else None
            base, delta = (self.store.duckdb_path(k) if k else None for k in (base_key, delta_key))
            cur = self._cursor()
            try:
                existing = stored_profiles_sql(base, delta) if base else None
                query, params, catalog = merge_profiles(cur, existing, batch, catalog)
                cur.execute(f"CREATE OR REPLACE TEMP TABLE __changed AS {query}", params)
                if delta:  # the delta's other users keep their rows
                    cur.execute(f"INSERT INTO __changed BY NAME SELECT * EXCLUDE ({duck.BASE_ROW_COLUMN}) FROM "
                                f"{duck.read_parquet([delta]).sql('duckdb')} d ANTI JOIN __pbatch b "
                                f"ON d.user_id = b.user_id")
                columns = [*PROFILE_FILE_COLUMNS, *(column for column, _ in catalog.columns.values())]
                prefix = f"profiles/tenant_id={tenant_id}/"
                seq = (doc or {}).get("seq", 0) + 1
                body = self._write_profiles(cur, base, doc or {}, columns, prefix, seq)
            finally:
                cur.close()
            written = (body["key"], body.get("delta", {}).get("key"))
            retire = [k for k in (base_key, delta_key) if k and k not in written]
            self._commit("profiles", tenant_id, doc, {**body, **_catalog_json(catalog)}, retire=retire)
        return body.get("delta", body)["key"]

    def _write_profiles(self, cur: duckdb.DuckDBPyConnection, base: str | None, doc: dict, columns: list[str],
                        prefix: str, seq: int) -> dict:
        """Write the temp table ``__changed`` (the delta's rows, updated) as the new delta,
        or, if it is too large or there is no base yet, the base with it applied. Returns the
        manifest's profile entries: key (base), rows, base_rows, delta (key, rows)."""
        select = ", ".join(f'"{c}"' for c in columns)
        changed = cur.execute("SELECT count(*) FROM __changed").fetchone()[0]
        base_rows = doc.get("base_rows", doc.get("rows", 0))
        if base is not None and changed <= max(self.profile_delta_min_rows, base_rows // self.profile_delta_fraction):
            key = f"{prefix}delta-{seq:012d}.parquet"
            cur.execute(f"CREATE OR REPLACE TEMP TABLE __delta AS {delta_rows_sql(base, '__changed', columns)}")
            replaced = cur.execute(f"SELECT count({duck.BASE_ROW_COLUMN}) FROM __delta").fetchone()[0]
            self._write_parquet(cur, "SELECT * FROM __delta", key, order_by="user_id")
            cur.execute("DROP TABLE __delta")
            return {"key": doc["key"], "rows": base_rows - replaced + changed, "base_rows": base_rows,
                    "delta": {"key": key, "rows": changed}}
        key = f"{prefix}profiles-{seq:012d}.parquet"
        merged = "SELECT * FROM __changed"
        if base is not None:
            merged += (f" UNION ALL BY NAME SELECT * FROM {duck.read_parquet([base]).sql('duckdb')} o "
                       f"ANTI JOIN __changed c ON o.user_id = c.user_id")
        cur.execute(f"CREATE OR REPLACE TEMP TABLE __merged AS SELECT {select} FROM ({merged})")
        rows = cur.execute("SELECT count(*) FROM __merged").fetchone()[0]
        self._write_parquet(cur, "SELECT * FROM __merged", key, order_by="user_id")
        cur.execute("DROP TABLE __merged")
        return {"key": key, "rows": rows, "base_rows": rows}

    def profiles_snapshot(self, tenant_id: int) -> ProfilesSnapshot:
        tenant_id = int(tenant_id)
        seq, doc = self._log("profiles", tenant_id).latest()
        if doc is None:
            return ProfilesSnapshot(tenant_id, 0, None, {}, 0)
        delta = (doc.get("delta") or {}).get("key")
        return ProfilesSnapshot(tenant_id, seq, self.store.duckdb_path(doc["key"]),
                                dict(Catalog.from_json(doc["catalog"]).columns), doc["rows"],
                                self.store.duckdb_path(delta) if delta else None, doc["key"], delta)


def _timestamp_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if not pa.types.is_timestamp(column.type):
        raise ValueError(f"{name} must be a timestamp column, got {column.type}")
    # An aware timestamp stores UTC instants: dropping the zone keeps UTC wall time.
    column = column.cast(_TS, safe=False) if column.type != _TS else column
    duck.check_timestamp_range(column, name)
    return column


def _normalize_events(table: pa.Table, tenant_id: int) -> pa.Table:
    missing = [c for c in EVENT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"events table lacks columns {missing}")
    if table.num_rows and table.column("tenant_id").null_count == 0:
        low, high = pc.min_max(table.column("tenant_id")).values()
        if low.as_py() != tenant_id or high.as_py() != tenant_id:
            raise ValueError(f"events for tenant {tenant_id} contain tenant_id {low}..{high}")
    elif table.num_rows:
        raise ValueError("tenant_id must not be null")
    for name in ("event_id", "user_id", "event_type"):
        if table.column(name).null_count:
            raise ValueError(f"{name} must not be null")
    props = table.column("properties")
    props = props.cast(pa.string()) if props.type != pa.string() else props
    return pa.table({
        "event_id": table.column("event_id").cast(pa.string()),
        "user_id": table.column("user_id").cast(pa.string()),
        "event_type": table.column("event_type").cast(pa.string()),
        "occurred_at": _timestamp_column(table.column("occurred_at"), "occurred_at"),
        "received_at": _timestamp_column(table.column("received_at"), "received_at"),
        "properties": pc.fill_null(props, "{}"),
    })


def _catalog(doc: dict | None) -> Catalog:
    return Catalog.from_json(doc["catalog"], doc.get("json_only", ())) if doc else Catalog.empty()


def _catalog_json(catalog: Catalog) -> dict:
    return {"catalog": catalog.to_json(), "json_only": sorted(catalog.json_only)}


def _pin_key(tenant_id: int, name: str) -> str:
    return f"{PINS_PREFIX}tenant_id={int(tenant_id)}/{name}.json"


def _referenced_keys(doc: dict | None) -> set[str]:
    if doc is None:
        return set()
    keys = {r["key"] for r in doc.get("retired", [])}
    keys.update(f["key"] for f in doc.get("files", []))
    if doc.get("key"):
        keys.add(doc["key"])
    if doc.get("delta"):
        keys.add(doc["delta"]["key"])
    return keys
