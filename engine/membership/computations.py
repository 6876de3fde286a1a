"""Paging through a segment's members, pinned to one computation.

A page reads the computation's ``members.parquet`` (sorted by user_id) on the interactive backend:
``user_id > last ORDER BY user_id LIMIT n`` stops after n rows and skips row groups by their
statistics. The caller's cursor carries (computation id, last user_id), so paging continues on
the snapshot it started on even while a recompute swaps the segment's current computation;
engine.membership.compute keeps a superseded computation's files at least ``RETENTION_GRACE`` (1 hour)
and for the ``KEEP_COMPUTATIONS`` newest. After that the cursor answers ``SnapshotExpired``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from backends.base import SourceMissing
from backends.relations import aliased, iso_text
from engine.errors import Gone, InvalidInput
from engine.segments.store import SegmentNotComputed, SegmentNotFound, ensure_schema

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from storage.objectstore import ObjectStore

MAX_MEMBERS_LIMIT = 10_000
DEFAULT_MEMBERS_LIMIT = 1000


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


def members_page(runtime: Runtime, tenant_id: int, segment_id: int, limit: int,
                 after: tuple[int, str] | None = None) -> MembersPage:
    """Members of the segment's current computation, or of ``after``'s computation after
    its user id. Raises SegmentNotFound, SegmentNotComputed, SnapshotExpired, ForeignCursor."""
    ensure_schema(runtime.meta)
    segment = runtime.meta.query_one(
        "SELECT current_computation_id FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
        (segment_id, tenant_id))
    if segment is None:
        raise SegmentNotFound(segment_id)
    computation_id = after[0] if after else segment["current_computation_id"]
    if computation_id is None:
        raise SegmentNotComputed(segment_id)
    row = runtime.meta.query_one(
        "SELECT members_key, member_count, files_deleted_at FROM segment_computations"
        " WHERE id = ? AND tenant_id = ? AND segment_id = ? AND status = 'done'",
        (computation_id, tenant_id, segment_id))
    if row is None or row["members_key"] is None:
        raise ForeignCursor(computation_id)
    if row["files_deleted_at"] is not None:
        raise SnapshotExpired(computation_id)
    store, backend = runtime.lake.store, runtime.backends.interactive
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
        if not store.exists(row["members_key"]):  # retention removed it since the check above
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


def read_members(store: ObjectStore, members_key: str) -> pa.Array:
    """The ``user_id`` column of a computation's members file (unique, ascending): the one
    reader of members files outside queries (compute's previous members, the membership index,
    broadcast audiences)."""
    source = pa.BufferReader(store.get_bytes(members_key)) if store.is_remote else store.duckdb_path(members_key)
    column = pq.ParquetFile(source).read(columns=["user_id"]).column("user_id")
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
