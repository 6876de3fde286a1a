"""Segment member exports: one file of a computation's members (plus chosen traits) in the lake.

An export pins the segment's current computation when it is requested, so it is reproducible
whatever recomputes follow. A worker thread (``Exports.worker``, started by the runtime) runs
queued exports; tests and the CLI call ``Exports.run`` directly. Each export is one query of the batch backend,
``SELECT members [LEFT JOIN profiles]``, written by ``QueryBackend.write_file`` straight to its
final place (DuckDB: ``COPY``, locally into the store's scratch directory and then renamed under
its key, on S3 by httpfs's multipart upload, which becomes visible only when complete). Either
way nobody sees half a file.

File columns: ``user_id``, ``computed_at`` (Parquet: naive UTC timestamp; CSV/JSONL:
ISO 8601 text with ``Z``), then one column per requested trait, named as the trait.
Rows are in user_id order.

Each export is an ``export`` job of engine.jobs (``segment_exports.job_id``; its status mirrored
on the export in the same transactions) held under a renewed lease: one whose worker died is run
again once its lease lapses, by any worker process.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlglot import exp

from backends import relations
from common.time import api_time, db_time, utc_now
from engine.errors import InvalidInput
from engine.jobs import JobWorker, Lease
from engine.segments.store import SegmentNotComputed, SegmentNotFound, ensure_schema

if TYPE_CHECKING:
    from backends.base import QueryBackend, TenantLake
    from backends.registry import Backends
    from engine.jobs import JobQueue
    from engine.membership.computations import ComputationStore
    from storage.lake import EventLake
    from storage.metadata import MetadataStore

log = logging.getLogger("segops.exports")

FORMATS = ("parquet", "csv", "jsonl")
MAX_TRAITS = 100
KIND = "export"
CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8",
                 "jsonl": "application/x-ndjson"}
_RESERVED_COLUMNS = ("user_id", "computed_at")

SCHEMA = """
CREATE TABLE IF NOT EXISTS segment_exports (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    segment_id INTEGER NOT NULL,
    computation_id INTEGER NOT NULL,          -- the membership snapshot exported
    format TEXT NOT NULL CHECK (format IN ('parquet', 'csv', 'jsonl')),
    traits TEXT NOT NULL,                     -- JSON list of trait names
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    trigger TEXT NOT NULL,                    -- 'api' | 'cli'
    object_key TEXT,
    row_count INTEGER,
    bytes INTEGER,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    job_id INTEGER                            -- engine.jobs
);
CREATE INDEX IF NOT EXISTS segment_exports_status ON segment_exports (status, id);
CREATE INDEX IF NOT EXISTS segment_exports_segment ON segment_exports (tenant_id, segment_id, id);
"""


class ExportError(InvalidInput):
    """Bad export request; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, code: str):
        super().__init__(message, code=code, field=field)


@dataclass(frozen=True)
class ExportFile:
    key: str
    format: str
    filename: str


def export_json(row) -> dict[str, Any]:
    return {
        "export_id": row["id"],
        "segment_id": row["segment_id"],
        "computation_id": row["computation_id"],
        "status": row["status"],
        "format": row["format"],
        "traits": orjson.loads(row["traits"]),
        "row_count": row["row_count"],
        "bytes": row["bytes"],
        "error": row["error"],
        "created_at": api_time(row["created_at"]),
        "finished_at": api_time(row["finished_at"]),
    }


class Exports:
    """``runtime.exports``."""

    def __init__(self, meta: MetadataStore, jobs: JobQueue, computations: ComputationStore, lake: EventLake,
                 backends: Backends):
        self._meta, self._jobs, self._computations = meta, jobs, computations
        self._lake, self._backends = lake, backends
        ensure_schema(self._meta)  # segments, read here
        self._meta.ensure_schema("segment_exports", SCHEMA)
        self.worker = JobWorker(self._jobs, KIND, self._handle, name="segops-exports")

    # -- requests ---------------------------------------------------------------------
    def create(self, tenant_id: int, segment_id: int, fmt: str, traits: list[str] | None = None,
               trigger: str = "api") -> dict[str, Any]:
        """Queue an export of the segment's current computation. Raises SegmentNotFound,
        SegmentNotComputed, ExportError (``format``, ``traits[i]``)."""
        row = self._meta.query_one(
            "SELECT current_computation_id FROM segments WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (segment_id, tenant_id))
        if row is None:
            raise SegmentNotFound(segment_id)
        if fmt not in FORMATS:
            raise ExportError("format", f"must be one of {', '.join(FORMATS)}", "invalid_format")
        traits = list(traits or [])
        self._check_traits(tenant_id, traits)
        if row["current_computation_id"] is None:
            raise SegmentNotComputed(segment_id, then="first")
        with self._meta.transaction() as conn:
            export_id = conn.execute(
                "INSERT INTO segment_exports (tenant_id, segment_id, computation_id, format, traits, status, trigger,"
                " created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (tenant_id, segment_id, row["current_computation_id"], fmt, orjson.dumps(traits).decode(), trigger,
                 db_time(utc_now()))).lastrowid
            job_id = self._jobs.enqueue(KIND, tenant_id, {"export_id": export_id}, trigger=trigger, conn=conn)
            conn.execute("UPDATE segment_exports SET job_id = ? WHERE id = ?", (job_id, export_id))
        self._jobs.wake(KIND)
        return self.get(tenant_id, export_id)

    def _check_traits(self, tenant_id: int, traits: list[str]) -> None:
        if len(traits) > MAX_TRAITS:
            raise ExportError("traits", f"at most {MAX_TRAITS} traits", "too_many_traits")
        known = self._lake.profiles_snapshot(tenant_id).traits
        seen = set()
        for i, name in enumerate(traits):
            if not isinstance(name, str) or name not in known:
                raise ExportError(f"traits[{i}]", f"unknown trait {name!r}", "unknown_trait")
            if name in seen or name in _RESERVED_COLUMNS:
                raise ExportError(f"traits[{i}]", f"{name!r} is already a column of the export", "duplicate_column")
            seen.add(name)

    def get(self, tenant_id: int, export_id: int, segment_id: int | None = None) -> dict[str, Any] | None:
        row = self._meta.query_one("SELECT * FROM segment_exports WHERE id = ? AND tenant_id = ?",
                                   (export_id, tenant_id))
        if row is None or (segment_id is not None and row["segment_id"] != segment_id):
            return None
        return export_json(row)

    def file(self, tenant_id: int, export_id: int) -> ExportFile | None:
        """The finished export's object (None unless done)."""
        row = self._meta.query_one(
            "SELECT segment_id, format, object_key FROM segment_exports WHERE id = ? AND tenant_id = ?"
            " AND status = 'done'", (export_id, tenant_id))
        if row is None:
            return None
        return ExportFile(row["object_key"], row["format"],
                          f"segment-{row['segment_id']}-export-{export_id}.{row['format']}")

    # -- running ----------------------------------------------------------------------
    def run_pending(self) -> list[int]:
        """Run queued exports until none is left; returns their ids."""
        return [lease.payload["export_id"] for lease in self.worker.run_pending()]

    def run(self, export_id: int, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Run one queued export now (the CLI and tests); ``progress`` gets DuckDB's percentage."""
        row = self._meta.query_one("SELECT job_id FROM segment_exports WHERE id = ?", (export_id,))
        lease = self._jobs.claim_id(row["job_id"], self.worker.lease, self.worker.owner) if row else None
        if lease is not None:
            with self._jobs.keep_alive(lease, self.worker.lease, self.worker.heartbeat):
                self._handle(lease, progress)
        return export_json(self._meta.query_one("SELECT * FROM segment_exports WHERE id = ?", (export_id,)))

    def _handle(self, lease: Lease, progress: Callable[[float], None] | None = None) -> bool:
        """The export handler: write the file, then settle the job and the export in one transaction
        (a lost lease changes nothing: the new holder writes the same key)."""
        export_id = lease.payload["export_id"]
        with self._meta.transaction() as conn:  # a worker that lost the job meanwhile mirrors nothing
            if not self._jobs.holds(lease, conn):
                return False
            conn.execute("UPDATE segment_exports SET status = 'running', started_at = ? WHERE id = ?",
                         (db_time(utc_now()), export_id))
        row = self._meta.query_one("SELECT * FROM segment_exports WHERE id = ?", (export_id,))
        try:
            key, rows, size = self._write(row, progress)
        except Exception as err:  # noqa: BLE001 - recorded on the export
            log.exception("export %s failed", export_id)
            error = f"{type(err).__name__}: {err}"[:2000]
            with self._meta.transaction() as conn:
                if failed := self._jobs.fail(lease, error, conn=conn):
                    conn.execute("UPDATE segment_exports SET status = 'failed', error = ?, finished_at = ?"
                                 " WHERE id = ?", (error, db_time(utc_now()), export_id))
            return failed
        with self._meta.transaction() as conn:
            if done := self._jobs.complete(lease, conn=conn):
                conn.execute("UPDATE segment_exports SET status = 'done', object_key = ?, row_count = ?, bytes = ?,"
                             " finished_at = ? WHERE id = ?", (key, rows, size, db_time(utc_now()), export_id))
        return done

    def _write(self, row, progress: Callable[[float], None] | None) -> tuple[str, int, int]:
        backend = self._backends.batch
        members_key = self._computations.kept_members_key(row["computation_id"])
        if members_key is None:
            raise FileNotFoundError(f"the members of computation {row['computation_id']} are no longer kept")
        fmt = row["format"]
        key = f"exports/tenant_id={row['tenant_id']}/export={row['id']}/members.{fmt}"
        traits = orjson.loads(row["traits"])
        lake = self._backends.tenant_lake(row["tenant_id"]) if traits else None
        query = self._select(backend, lake, members_key, fmt, traits)
        # A long (Spark) export keeps the profiles files it joins through a garbage collection.
        with self._lake.pinned(f"export-{row['id']}", profiles=lake.profiles) if lake else nullcontext():
            # The members file is in user_id order; a join with profiles needs the order restored.
            written = backend.write_file(query, key, fmt, order_by=("user_id",) if traits else (), progress=progress)
        return written.key, written.rows, written.bytes

    def _select(self, backend: QueryBackend, lake: TenantLake | None, members_key: str, fmt: str,
                traits: list[str]) -> exp.Select:
        """The export's SELECT; every name is a quoted identifier."""
        members = relations.aliased(backend.members(members_key), "m")
        computed_at = exp.column("computed_at", table="m", quoted=True)
        if fmt != "parquet":
            computed_at = relations.iso_text(computed_at)
        columns = [exp.column("user_id", table="m", quoted=True),
                   exp.alias_(computed_at, "computed_at", quoted=True)]
        query = exp.select(*columns).from_(members)
        if traits:
            for name in traits:
                column, _ = lake.profiles.traits[name]
                query = query.select(exp.alias_(exp.column(column, table="p", quoted=True), name, quoted=True))
            profiles = relations.aliased(backend.relations(lake).profiles, "p")
            query = query.join(profiles, on=exp.EQ(this=exp.column("user_id", table="m", quoted=True),
                                                   expression=exp.column("user_id", table="p", quoted=True)),
                               join_type="left")
        return query

    # -- worker -----------------------------------------------------------------------
