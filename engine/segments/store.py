"""Segments and their version history (SQLite metadata store).

A segment's ``definition`` column always holds its current version; ``segment_versions``
keeps every definition it ever had, each with its author and time, so any version can be
shown or previewed again. Definitions are stored in canonical form
(``Definition.to_dict()``): an update that does not change the meaning of the definition
does not create a version.

Deletion is soft (``deleted_at``): a deleted segment answers like a missing one, while
its computations and member files stay readable for journeys and exports in flight.

This module also declares ``segment_computations`` (engine.membership.computations owns it) because
a segment's JSON shows its current member count and status.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from common.time import api_time, db_time, utc_now
from compiler import Definition, parse_definition
from engine.errors import Conflict, NotFound
from storage.metadata import MetadataStore

SEGMENT_TYPES = ("rule", "ai", "lookalike")
BUILT_SEGMENT_TYPES = ("rule",)
DEFAULT_COMPUTE_INTERVAL_MINUTES = 15
MAX_COMPUTE_INTERVAL_MINUTES = 60 * 24 * 30

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    segment_type TEXT NOT NULL,
    definition TEXT,                          -- canonical JSON of the current version; NULL = draft
    version INTEGER NOT NULL DEFAULT 0,       -- 0 until a definition is set
    compute_interval_minutes INTEGER NOT NULL DEFAULT 15,
    current_computation_id INTEGER,           -- the membership readers serve (engine.membership.compute)
    created_by_user_id INTEGER,
    created_by_api_key_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS segments_tenant ON segments (tenant_id, id);
CREATE TABLE IF NOT EXISTS segment_versions (
    segment_id INTEGER NOT NULL REFERENCES segments(id),
    version INTEGER NOT NULL,
    tenant_id INTEGER NOT NULL,
    definition TEXT NOT NULL,
    author_user_id INTEGER,
    author_api_key_id INTEGER,
    created_at TEXT NOT NULL,
    PRIMARY KEY (segment_id, version)
);
CREATE TABLE IF NOT EXISTS segment_version_impacts (  -- what the author saw before saving (engine.segments.explain)
    segment_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    impact TEXT NOT NULL,                     -- JSON: impact_id, as_of, computation_id, enter/stay/leave counts
    PRIMARY KEY (segment_id, version)
);
CREATE TABLE IF NOT EXISTS segment_computations (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    segment_id INTEGER NOT NULL REFERENCES segments(id),
    version INTEGER NOT NULL,                 -- definition version computed
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    trigger TEXT NOT NULL,                    -- 'api' | 'schedule' | 'cli'
    queued_at TEXT NOT NULL,
    as_of TEXT,                               -- the instant the membership reflects
    started_at TEXT,
    finished_at TEXT,
    lease_until TEXT,                         -- unused: the job's lease is in engine.jobs (same id)
    attempts INTEGER NOT NULL DEFAULT 0,      -- unused: likewise
    previous_computation_id INTEGER,          -- what entered/exited are relative to
    member_count INTEGER,
    entered_count INTEGER,
    exited_count INTEGER,
    members_key TEXT,
    changes_key TEXT,
    files_deleted_at TEXT,                    -- member/changes files removed by retention
    error TEXT
);
CREATE INDEX IF NOT EXISTS segment_computations_segment ON segment_computations (segment_id, id);
CREATE INDEX IF NOT EXISTS segment_computations_status ON segment_computations (status, id);
"""


def ensure_schema(meta: MetadataStore) -> None:
    """Create the segment tables (idempotent). Readers of ``segment_computations`` call it too."""
    meta.ensure_schema("segments", SCHEMA)


@dataclass(frozen=True)
class Author:
    """Who made a change: a user (JWT) or an API key."""

    user_id: int | None
    api_key_id: int | None

    def to_json(self) -> dict[str, int | None]:
        return {"user_id": self.user_id, "api_key_id": self.api_key_id}


class SegmentNotFound(NotFound):
    def __init__(self, segment_id: int, message: str | None = None):
        super().__init__("segment", segment_id, message=message)
        self.segment_id = segment_id


class SegmentInUse(Conflict):
    """The segment is referenced by other live segments (deleting it would break them)."""

    def __init__(self, segment_id: int, referenced_by: list[int]):
        ids = ", ".join(str(i) for i in referenced_by)
        super().__init__(f"Segment {segment_id} is referenced by segment(s) {ids}; remove those references first.",
                         code="segment_in_use")
        self.referenced_by = referenced_by


class SegmentNotComputed(Conflict):
    """The segment has a definition (or not) but no computation to read yet."""

    def __init__(self, segment_id: int, *, then: str = "and retry when it is done"):
        super().__init__(f"Segment {segment_id} has not been computed yet; "
                         f"POST /api/segments/{segment_id}/compute/ {then}.", code="segment_not_computed")
        self.segment_id = segment_id


def segment_references(obj: Any) -> set[int]:
    """Segment ids a (canonical) definition refers to directly."""
    found: set[int] = set()
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "segment" and isinstance(node.get("segment_id"), int):
                found.add(node["segment_id"])
            stack.extend(node.get("conditions") or ())
    return found


def _status(row) -> str:
    """draft | pending | queued | computing | ready | stale | failed."""
    if row["definition"] is None:
        return "draft"
    latest = row["latest_status"]
    if latest == "queued":
        return "queued"
    if latest == "running":
        return "computing"
    if latest == "failed":
        return "failed"
    if row["current_computation_id"] is None:
        return "pending"
    return "ready" if row["computed_version"] == row["version"] else "stale"


def segment_json(row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tenant": row["tenant_id"],
        "name": row["name"],
        "description": row["description"],
        "segment_type": row["segment_type"],
        "definition": None if row["definition"] is None else orjson.loads(row["definition"]),
        "version": row["version"],
        "created_at": api_time(row["created_at"]),
        "updated_at": api_time(row["updated_at"]),
        "created_by": Author(row["created_by_user_id"], row["created_by_api_key_id"]).to_json(),
        "member_count": row["member_count"],
        "last_computed_at": api_time(row["last_computed_at"]),
        "compute_interval_minutes": row["compute_interval_minutes"],
        "status": _status(row),
    }


def version_json(row) -> dict[str, Any]:
    return {
        "version": row["version"],
        "definition": orjson.loads(row["definition"]),
        "author": Author(row["author_user_id"], row["author_api_key_id"]).to_json(),
        "created_at": api_time(row["created_at"]),
        "impact": None if row["impact"] is None else orjson.loads(row["impact"]),
    }


_SEGMENT_COLUMNS = """
s.*, cur.member_count AS member_count, cur.as_of AS last_computed_at,
       cur.version AS computed_version,
       (SELECT c.status FROM segment_computations c WHERE c.segment_id = s.id
        ORDER BY c.id DESC LIMIT 1) AS latest_status"""
_LIVE_SEGMENTS = """segments s
LEFT JOIN segment_computations cur ON cur.id = s.current_computation_id
WHERE s.tenant_id = ? AND s.deleted_at IS NULL
"""
_SELECT_SEGMENT = f"SELECT {_SEGMENT_COLUMNS} FROM {_LIVE_SEGMENTS}"
_VERSIONS = ("segment_versions v LEFT JOIN segment_version_impacts i ON i.segment_id = v.segment_id"
             " AND i.version = v.version WHERE v.segment_id = ? AND v.tenant_id = ?")


def canonical_json(definition: Definition) -> str:
    return orjson.dumps(definition.to_dict()).decode()


class SegmentStore:
    """Tenant-scoped access to segments and versions. Every method takes the tenant first and
    treats another tenant's segment exactly like a missing one."""

    def __init__(self, meta: MetadataStore):
        self.meta = meta
        ensure_schema(meta)

    # -- reads ------------------------------------------------------------------------
    def get(self, tenant_id: int, segment_id: int) -> dict[str, Any] | None:
        row = self.meta.query_one(_SELECT_SEGMENT + " AND s.id = ?", (tenant_id, segment_id))
        return None if row is None else segment_json(row)

    def list(self, tenant_id: int, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        count, rows = self.meta.page(_LIVE_SEGMENTS, (tenant_id,), "s.id", limit, offset, columns=_SEGMENT_COLUMNS)
        return count, [segment_json(row) for row in rows]

    def exists(self, tenant_id: int, segment_id: int) -> bool:
        return self.meta.query_one(
            "SELECT 1 FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (segment_id, tenant_id)) is not None

    def definition(self, tenant_id: int, segment_id: int) -> tuple[int, Definition] | None:
        """(version, current definition) of a live segment; None if missing, deleted or a draft."""
        row = self.meta.query_one(
            "SELECT version, definition FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (segment_id, tenant_id))
        if row is None or row["definition"] is None:
            return None
        return row["version"], parse_definition(orjson.loads(row["definition"]))

    def versions(self, tenant_id: int, segment_id: int, limit: int, offset: int) -> tuple[int, list[dict]]:
        """Newest first."""
        self._require(tenant_id, segment_id)
        count, rows = self.meta.page(_VERSIONS, (segment_id, tenant_id), "v.version DESC", limit, offset,
                                     columns="v.*, i.impact")
        return count, [version_json(row) for row in rows]

    def version(self, tenant_id: int, segment_id: int, version: int) -> dict[str, Any] | None:
        self._require(tenant_id, segment_id)
        row = self.meta.query_one(f"SELECT v.*, i.impact FROM {_VERSIONS} AND v.version = ?",
                                  (segment_id, tenant_id, version))
        return None if row is None else version_json(row)

    def _require(self, tenant_id: int, segment_id: int) -> None:
        if not self.exists(tenant_id, segment_id):
            raise SegmentNotFound(segment_id)

    def resolver(self, tenant_id: int, overrides: dict[int, Definition] | None = None):
        """``resolve_segment`` for the compiler: a referenced segment's current definition,
        within ``tenant_id`` only. ``overrides`` stands in for definitions being saved, so a
        cycle through the segment being edited is caught before it is stored."""
        overrides = overrides or {}

        def resolve(segment_id: int) -> Definition:
            if segment_id in overrides:
                return overrides[segment_id]
            found = self.definition(tenant_id, segment_id)
            if found is None:  # the compiler reports segment_not_found at the reference's path
                raise KeyError(segment_id)
            return found[1]

        return resolve

    # -- writes -----------------------------------------------------------------------
    def create(self, tenant_id: int, *, name: str, segment_type: str, description: str,
               definition: Definition | None, author: Author,
               compute_interval_minutes: int = DEFAULT_COMPUTE_INTERVAL_MINUTES) -> dict[str, Any]:
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            segment_id = conn.execute(
                "INSERT INTO segments (tenant_id, name, description, segment_type, compute_interval_minutes,"
                " created_by_user_id, created_by_api_key_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant_id, name, description, segment_type, compute_interval_minutes,
                 author.user_id, author.api_key_id, now, now)).lastrowid
            if definition is not None:
                self._new_version(conn, tenant_id, segment_id, 0, definition, author, now)
        return self.get(tenant_id, segment_id)

    def update(self, tenant_id: int, segment_id: int, *, author: Author, definition: Definition | None = None,
               impact: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Change metadata (name, description, compute_interval_minutes) and/or the definition;
        a definition that differs from the current one becomes a new version, which records
        ``impact`` (what the author saw of the change) if given."""
        allowed = {"name", "description", "compute_interval_minutes"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            row = conn.execute(
                "SELECT version, definition FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
                (segment_id, tenant_id)).fetchone()
            if row is None:
                raise SegmentNotFound(segment_id)
            changed = bool(fields)
            if definition is not None and canonical_json(definition) != row["definition"]:
                self._new_version(conn, tenant_id, segment_id, row["version"], definition, author, now)
                if impact is not None:
                    conn.execute("INSERT INTO segment_version_impacts (segment_id, version, impact) VALUES (?, ?, ?)",
                                 (segment_id, row["version"] + 1, orjson.dumps(impact).decode()))
                changed = True
            if fields:
                assignments = ", ".join(f"{name} = ?" for name in fields)  # names from `allowed` only
                conn.execute(f"UPDATE segments SET {assignments} WHERE id = ?", (*fields.values(), segment_id))
            if changed:
                conn.execute("UPDATE segments SET updated_at = ? WHERE id = ?", (now, segment_id))
        return self.get(tenant_id, segment_id)

    @staticmethod
    def _new_version(conn, tenant_id: int, segment_id: int, current: int, definition: Definition,
                     author: Author, now: str) -> None:
        text = canonical_json(definition)
        version = current + 1
        conn.execute(
            "INSERT INTO segment_versions (segment_id, version, tenant_id, definition, author_user_id,"
            " author_api_key_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (segment_id, version, tenant_id, text, author.user_id, author.api_key_id, now))
        conn.execute("UPDATE segments SET definition = ?, version = ? WHERE id = ?", (text, version, segment_id))

    def delete(self, tenant_id: int, segment_id: int) -> None:
        """Soft delete; refused while other live segments reference this one."""
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            if conn.execute("SELECT 1 FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
                            (segment_id, tenant_id)).fetchone() is None:
                raise SegmentNotFound(segment_id)
            referencing = sorted(
                row["id"] for row in conn.execute(
                    "SELECT id, definition FROM segments WHERE tenant_id = ? AND deleted_at IS NULL"
                    " AND definition IS NOT NULL AND id != ?", (tenant_id, segment_id))
                if segment_id in segment_references(orjson.loads(row["definition"])))
            if referencing:
                raise SegmentInUse(segment_id, referencing)
            conn.execute("UPDATE segments SET deleted_at = ?, updated_at = ? WHERE id = ?", (now, now, segment_id))

    # -- what compute reads and swaps ----------------------------------------------------
    def compute_state(self, tenant_id: int, segment_id: int,
                      conn: sqlite3.Connection | None = None) -> sqlite3.Row | None:
        """``version``, ``definition`` (JSON text), ``current_computation_id``, ``deleted_at`` of the
        tenant's segment, deleted or not (None if it never existed); in ``conn``'s transaction if given."""
        sql = ("SELECT version, definition, current_computation_id, deleted_at FROM segments"
               " WHERE id = ? AND tenant_id = ?")
        if conn is not None:
            return conn.execute(sql, (segment_id, tenant_id)).fetchone()
        return self.meta.query_one(sql, (segment_id, tenant_id))

    @staticmethod
    def set_current_computation(conn: sqlite3.Connection, segment_id: int, computation_id: int) -> None:
        """Point the segment at its new computation, in the transaction that finishes it."""
        conn.execute("UPDATE segments SET current_computation_id = ? WHERE id = ?", (computation_id, segment_id))
