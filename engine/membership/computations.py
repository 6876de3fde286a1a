"""The offline membership store: ``segment_computations`` rows and the members/changes files.

This module is the only reader and writer of both (compute, the membership index, members pages,
exports, broadcast audiences and journeys all go through ``ComputationStore``). A computation
writes, through the lake's object store (atomic puts)::

    segments/tenant_id=<T>/segment_id=<S>/computation=<C>/members.parquet
        user_id VARCHAR (sorted ascending, unique), computed_at TIMESTAMP (naive UTC = as_of)
    segments/tenant_id=<T>/segment_id=<S>/computation=<C>/changes.parquet
        user_id VARCHAR, change VARCHAR ('entered' | 'exited'), at TIMESTAMP (= as_of),
        sorted by change then user_id

Members pages
    A page reads the computation's ``members.parquet`` (sorted by user_id) on the interactive backend:
    ``user_id > last ORDER BY user_id LIMIT n`` stops after n rows and skips row groups by their
    statistics. The caller's cursor carries (computation id, last user_id), so paging continues on
    the snapshot it started on even while a recompute swaps the segment's current computation.

Retention
    Files of all but the newest ``KEEP_COMPUTATIONS`` done computations of a segment are deleted
    once a newer computation superseded them at least ``RETENTION_GRACE`` ago, so a reader that
    started on a computation can finish with it (rows stay, with ``files_deleted_at``); a cursor
    on it then answers ``SnapshotExpired``.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlglot import exp

from backends.base import SourceMissing
from backends.relations import aliased, iso_text
from common.time import db_time, parse_db_time, utc_now
from engine.errors import Gone, InvalidInput
from engine.segments.store import SegmentNotComputed, SegmentNotFound, ensure_schema

if TYPE_CHECKING:
    from backends.registry import Backends
    from storage.lake import EventLake
    from storage.metadata import MetadataStore
    from storage.objectstore import ObjectStore

log = logging.getLogger("segops.computations")

MAX_MEMBERS_LIMIT = 10_000
DEFAULT_MEMBERS_LIMIT = 1000
KEEP_COMPUTATIONS = 3
RETENTION_GRACE = timedelta(hours=1)

_TIMESTAMP = pa.timestamp("us")
MEMBERS_SCHEMA = pa.schema([pa.field("user_id", pa.string()), pa.field("computed_at", _TIMESTAMP)])
CHANGES_SCHEMA = pa.schema([pa.field("user_id", pa.string()), pa.field("change", pa.string()),
                            pa.field("at", _TIMESTAMP)])


def computation_prefix(tenant_id: int, segment_id: int, computation_id: int) -> str:
    return f"segments/tenant_id={tenant_id}/segment_id={segment_id}/computation={computation_id}/"


class SnapshotExpired(Gone):
    """The computation a cursor is pinned to is gone (retention)."""

    def __init__(self, computation_id: int):
        super().__init__("The membership snapshot this cursor belongs to is no longer kept; start again without a "
                         "cursor.", code="cursor_expired", fields={"cursor": ["expired"]})
        self.computation_id = computation_id


class ForeignCursor(InvalidInput):
    """The cursor names a computation that is not one of this segment's."""

    def __init__(self, computation_id: int):
        super().__init__("not a cursor of this segment", code="invalid_cursor", field="cursor")
        self.computation_id = computation_id


@dataclass(frozen=True)
class MembersPage:
    computation_id: int
    results: list[dict]          # {"user_id", "computed_at"} in user_id order
    last_user_id: str | None     # set when more members follow
    count: int                   # members in the computation


@dataclass(frozen=True)
class ComputationResult:
    """What a listener learns about a successful computation."""

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


@dataclass(frozen=True)
class WrittenFiles:
    """A computation's files, written but not yet visible (``finish`` makes them so)."""

    members_key: str
    changes_key: str
    members: pa.Array
    entered: pa.Array
    exited: pa.Array


class ComputationStore:
    """``runtime.computations``: see the module docstring."""

    def __init__(self, meta: MetadataStore, lake: EventLake, backends: Backends):
        self._meta, self._lake, self._backends = meta, lake, backends
        ensure_schema(meta)  # segment_computations is declared with the segments

    @property
    def _store(self) -> ObjectStore:
        return self._lake.store

    # -- the rows -------------------------------------------------------------------------
    @staticmethod
    def create(conn: sqlite3.Connection, computation_id: int, tenant_id: int, segment_id: int, version: int,
               trigger: str) -> None:
        """The queued computation of job ``computation_id``, in the job's transaction."""
        conn.execute(
            "INSERT INTO segment_computations (id, tenant_id, segment_id, version, status, trigger, queued_at)"
            " VALUES (?, ?, ?, ?, 'queued', ?, ?)",
            (computation_id, tenant_id, segment_id, version, trigger, db_time(utc_now())))

    def start(self, computation_id: int, as_of: datetime, version: int, previous_id: int | None,
              conn: sqlite3.Connection | None = None) -> None:
        """Mirror a claimed job as running (in the caller's transaction that checks it still holds it)."""
        (conn or self._meta).execute(
            "UPDATE segment_computations SET status = 'running', started_at = ?, finished_at = NULL, error = NULL,"
            " as_of = ?, version = ?, previous_computation_id = ? WHERE id = ?",
            (db_time(as_of), db_time(as_of), version, previous_id, computation_id))

    @staticmethod
    def finish(conn: sqlite3.Connection, computation_id: int, files: WrittenFiles) -> None:
        """Mark the computation done, in the transaction that settles its job and swaps the segment."""
        conn.execute(
            "UPDATE segment_computations SET status = 'done', finished_at = ?, member_count = ?,"
            " entered_count = ?, exited_count = ?, members_key = ?, changes_key = ? WHERE id = ?",
            (db_time(utc_now()), len(files.members), len(files.entered), len(files.exited), files.members_key,
             files.changes_key, computation_id))

    @staticmethod
    def fail(conn: sqlite3.Connection, computation_id: int, error: str) -> None:
        now = db_time(utc_now())
        conn.execute("UPDATE segment_computations SET status = 'failed', started_at = coalesce(started_at, ?),"
                     " finished_at = ?, error = ? WHERE id = ?", (now, now, error, computation_id))

    def get(self, tenant_id: int, computation_id: int) -> sqlite3.Row | None:
        return self._meta.query_one(
            "SELECT * FROM segment_computations WHERE id = ? AND tenant_id = ?", (computation_id, tenant_id))

    def list(self, tenant_id: int, segment_id: int, limit: int, offset: int) -> tuple[int, list[sqlite3.Row]]:
        """Newest first."""
        return self._meta.page("segment_computations WHERE segment_id = ? AND tenant_id = ?",
                               (segment_id, tenant_id), "id DESC", limit, offset)

    def due_candidates(self) -> list[sqlite3.Row]:
        """Live segments with a definition and their latest computation (the scheduler's input)."""
        return self._meta.query(
            """SELECT s.id, s.tenant_id, s.version, s.compute_interval_minutes,
                      l.status AS last_status, l.version AS last_version, l.queued_at AS last_queued_at
               FROM segments s
               LEFT JOIN segment_computations l ON l.id = (
                   SELECT MAX(c.id) FROM segment_computations c WHERE c.segment_id = s.id)
               WHERE s.deleted_at IS NULL AND s.definition IS NOT NULL""")

    def kept_members_key(self, computation_id: int, tenant_id: int | None = None,
                         segment_id: int | None = None) -> str | None:
        """The members file of a done computation whose files are kept (optionally of that tenant's segment)."""
        sql, params = ("SELECT members_key FROM segment_computations WHERE id = ? AND status = 'done'"
                       " AND files_deleted_at IS NULL", [computation_id])
        if tenant_id is not None:
            sql, params = sql + " AND tenant_id = ? AND segment_id = ?", [*params, tenant_id, segment_id]
        row = self._meta.query_one(sql, params)
        return None if row is None else row["members_key"]

    # -- the files ------------------------------------------------------------------------
    def write(self, tenant_id: int, segment_id: int, computation_id: int, members: pa.Array,
              previous_id: int | None, as_of: datetime, written: list[str]) -> WrittenFiles:
        """Write the members and, against the previous computation's, the changes (Arrow, then one
        atomic put each); ``written`` collects the keys as they are put, for ``delete_files``."""
        previous = self.members_of(previous_id)
        entered = members.filter(pc.invert(pc.is_in(members, value_set=previous)))
        exited = previous.filter(pc.invert(pc.is_in(previous, value_set=members)))
        prefix = computation_prefix(tenant_id, segment_id, computation_id)
        members_key, changes_key = prefix + "members.parquet", prefix + "changes.parquet"
        at = pa.scalar(as_of, _TIMESTAMP)
        self._put_table(members_key, pa.table([members, pa.repeat(at, len(members))], schema=MEMBERS_SCHEMA),
                        written)
        changes = pa.table([
            pa.concat_arrays([entered, exited]),
            pa.concat_arrays([pa.repeat(pa.scalar("entered"), len(entered)),
                              pa.repeat(pa.scalar("exited"), len(exited))]).cast(pa.string()),
            pa.repeat(at, len(entered) + len(exited)),
        ], schema=CHANGES_SCHEMA)
        self._put_table(changes_key, changes, written)
        return WrittenFiles(members_key, changes_key, members, entered, exited)

    def _put_table(self, key: str, table: pa.Table, written: list[str]) -> None:
        path = self._store.new_scratch_path(".parquet")
        try:
            pq.write_table(table, path, compression="zstd")
            written.append(key)
            self._store.put_file(key, path, move=True)
        finally:
            path.unlink(missing_ok=True)

    def delete_files(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._store.delete(key)
            except Exception:  # noqa: BLE001 - an orphan file is harmless; it is never referenced
                log.exception("could not delete %s", key)

    def read_members(self, members_key: str) -> pa.Array:
        """The ``user_id`` column of a members file (unique, ascending): the one reader of members
        files outside queries."""
        store = self._store
        source = pa.BufferReader(store.get_bytes(members_key)) if store.is_remote else store.duckdb_path(members_key)
        column = pq.ParquetFile(source).read(columns=["user_id"]).column("user_id")
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)

    def members_of(self, computation_id: int | None) -> pa.Array:
        """A computation's members (empty when there is none or it has no members file)."""
        row = None if computation_id is None else self._meta.query_one(
            "SELECT members_key FROM segment_computations WHERE id = ?", (computation_id,))
        if row is None or row["members_key"] is None:
            return pa.array([], pa.string())
        return self.read_members(row["members_key"])

    def current_members(self, tenant_id: int, segment_id: int) -> pa.Array | None:
        """The members of the live segment's current computation; None if it was never computed.
        Raises SegmentNotFound."""
        row = self._meta.query_one(
            "SELECT c.members_key FROM segments s LEFT JOIN segment_computations c ON c.id = s.current_computation_id"
            " WHERE s.id = ? AND s.tenant_id = ? AND s.deleted_at IS NULL", (segment_id, tenant_id))
        if row is None:
            raise SegmentNotFound(segment_id)
        return None if row["members_key"] is None else self.read_members(row["members_key"])

    def current(self, tenant_id: int, segment_id: int) -> tuple[int, datetime, pa.Array] | None:
        """(id, as_of (aware), members) of the segment's current computation while its files are kept."""
        row = self._meta.query_one(
            "SELECT c.id, c.as_of, c.members_key FROM segments s JOIN segment_computations c"
            " ON c.id = s.current_computation_id WHERE s.id = ? AND s.tenant_id = ? AND c.status = 'done'"
            " AND c.files_deleted_at IS NULL", (segment_id, tenant_id))
        if row is None or row["members_key"] is None:
            return None
        return row["id"], parse_db_time(row["as_of"]), self.read_members(row["members_key"])

    def done_version(self, tenant_id: int, segment_id: int, computation_id: int) -> tuple[int, datetime] | None:
        """(definition version, as_of (aware)) of a done computation of the tenant's segment."""
        row = self._meta.query_one(
            "SELECT version, as_of FROM segment_computations WHERE id = ? AND tenant_id = ? AND segment_id = ?"
            " AND status = 'done'", (computation_id, tenant_id, segment_id))
        return None if row is None else (row["version"], parse_db_time(row["as_of"]))

    def read_changes(self, tenant_id: int, computation_id: int) -> pa.Table | None:
        """The entered/exited rows of a done computation of the tenant (None if unknown or gone)."""
        row = self._meta.query_one(
            "SELECT changes_key FROM segment_computations WHERE id = ? AND tenant_id = ? AND status = 'done'"
            " AND files_deleted_at IS NULL", (computation_id, tenant_id))
        if row is None or row["changes_key"] is None:
            return None
        return pq.read_table(pa.BufferReader(self._store.get_bytes(row["changes_key"])))

    def members_page(self, tenant_id: int, segment_id: int, limit: int,
                     after: tuple[int, str] | None = None) -> MembersPage:
        """Members of the segment's current computation, or of ``after``'s computation after
        its user id. Raises SegmentNotFound, SegmentNotComputed, SnapshotExpired, ForeignCursor."""
        segment = self._meta.query_one(
            "SELECT current_computation_id FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (segment_id, tenant_id))
        if segment is None:
            raise SegmentNotFound(segment_id)
        computation_id = after[0] if after else segment["current_computation_id"]
        if computation_id is None:
            raise SegmentNotComputed(segment_id)
        row = self._meta.query_one(
            "SELECT members_key, member_count, files_deleted_at FROM segment_computations"
            " WHERE id = ? AND tenant_id = ? AND segment_id = ? AND status = 'done'",
            (computation_id, tenant_id, segment_id))
        if row is None or row["members_key"] is None:
            raise ForeignCursor(computation_id)
        if row["files_deleted_at"] is not None:
            raise SnapshotExpired(computation_id)
        backend = self._backends.interactive
        user_id = exp.column("user_id", table="m", quoted=True)
        try:
            query = (exp.select(user_id, exp.alias_(iso_text(exp.column("computed_at", table="m", quoted=True)),
                                                    "computed_at"))
                     .from_(aliased(backend.members(row["members_key"]), "m"))
                     .order_by(user_id.copy()).limit(limit + 1))
            if after:
                query = query.where(exp.GT(this=user_id.copy(), expression=exp.Literal.string(after[1])))
            fetched = [tuple(r.values()) for r in backend.fetch_arrow(query).to_pylist()]
        except SourceMissing:
            if not self._store.exists(row["members_key"]):  # retention removed it since the check above
                raise SnapshotExpired(computation_id) from None
            raise
        more = len(fetched) > limit
        fetched = fetched[:limit]
        return MembersPage(
            computation_id=computation_id,
            results=[{"user_id": user_id, "computed_at": computed_at} for user_id, computed_at in fetched],
            last_user_id=fetched[-1][0] if more else None,
            count=row["member_count"],
        )

    # -- retention ------------------------------------------------------------------------
    def apply_retention(self, tenant_id: int, segment_id: int, now: datetime | None = None) -> int:
        """Delete the files of old computations (see module docstring); returns how many computations."""
        threshold = db_time((now or utc_now()) - RETENTION_GRACE)
        rows = self._meta.query(
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
            self.delete_files([key for key in (row["members_key"], row["changes_key"]) if key])
            self._meta.execute("UPDATE segment_computations SET files_deleted_at = ? WHERE id = ?",
                               (db_time(utc_now()), row["id"]))
        return len(rows)
