"""The DuckDB backend: one in-memory DuckDB per process and what its queries read.

Every call takes its own cursor, so requests run in parallel threads without sharing
state, and the Parquet metadata cache is shared between them.

DuckDB's fixed cost per query grows with the files a ``read_parquet`` names (each is
bound and partition-pruned per query) and with ``union_by_name`` (every file's schema
is reconciled per query): at 183 daily files, about 4 ms and 7 ms, more than a
7-day query's own work. So queries do not name every file of a snapshot:

* a query reading all history uses a view of the snapshot, created once;
* a query whose events scans stay within a date range (the compiler reports it in
  ``query.meta[EVENT_DATES]``) reads only the files of those days, named inline;
* ``union_by_name`` is asked for only when the files read do not all have one schema
  (files are immutable, so each file's schema is read once per process), and a catalog
  column none of them has reads as a typed NULL.

``COPY``, the ``read_parquet`` options and the footer lookup are the only SQL text written
here; every query is rendered by ``compiler.to_sql(..., "duckdb", pretty=False)``.

Compute does not use ``write_parquet`` yet: it takes the members through ``members_arrow`` and
writes members and changes from Arrow (``engine.membership.computations.write``), today's path, until
``bench_compute`` shows a ``COPY`` + join equal (design 13, risk 3).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, ClassVar

import duckdb
import pyarrow as pa
from sqlglot import exp

from backends import relations as rel
from backends.base import ExportFormat, ProgressPoller, Relations, SourceMissing, ViewCache, Written
from compiler import to_sql
from storage.duck import connect, read_parquet, sql_literal

if TYPE_CHECKING:
    from storage.objectstore import ObjectStore

_COPY_OPTIONS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}
_ROW_NUMBER = "file_row_number"  # what read_parquet(file_row_number=true) names the row position
_USER_ID_ONLY = pa.schema([pa.field("user_id", pa.string())])


class DuckDBBackend:
    """The process's DuckDB database for queries (``runtime.backends.get("duckdb")``)."""

    name: ClassVar[str] = "duckdb"
    dialect: ClassVar[str] = "duckdb"
    # Views kept per tenant and relation: a query compiled against a slightly older
    # snapshot (another thread committed meanwhile) still finds its view.
    VIEWS_KEPT = 4

    def __init__(self, store: ObjectStore, settings):
        self._store, self._settings = store, settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._views = ViewCache(self.VIEWS_KEPT, self._create_view, self._drop_view)
        self.scans = DuckDBScans(store, self._execute)

    # -- relations -----------------------------------------------------------------------
    def relations(self, lake: rel.TenantLake, event_dates: tuple[date | None, date] | None = None) -> Relations:
        """Views of the snapshot, or for events within ``event_dates`` just those days' files."""
        tenant_id, events_seq, profiles_seq = lake.key

        def profiles() -> exp.Expression:
            return self._views.view((tenant_id, rel.PROFILES_TABLE), f"lake_t{tenant_id}_profiles_s{profiles_seq}",
                                    lambda: rel.profiles(self.scans, lake.profiles))

        def events() -> exp.Expression:
            entries = rel.event_entries(lake.events, event_dates)
            if len(entries) == len(lake.events.entries):
                return self._views.view((tenant_id, rel.EVENTS_TABLE), f"lake_t{tenant_id}_events_s{events_seq}",
                                        lambda: rel.events(self.scans, lake.events, entries))
            return rel.events(self.scans, lake.events, entries)

        return Relations(events=events, profiles=profiles)

    def members(self, key: str) -> exp.Expression:
        return rel.members(self.scans, key)

    def _create_view(self, name: str, body: exp.Expression) -> None:
        self._execute(f'CREATE OR REPLACE VIEW "{name}" AS {self._sql(exp.select(exp.Star()).from_(body))}')

    def _drop_view(self, name: str) -> None:
        self._execute(f'DROP VIEW IF EXISTS "{name}"')

    # -- running -------------------------------------------------------------------------
    def count_and_sample(self, query: exp.Select, limit: int) -> tuple[int, list[str]]:
        """One pass: ``arg_min(u, u, n)`` keeps a top-n heap instead of sorting every member."""
        members = query.subquery("members")
        user_id = exp.column("user_id", table="members", quoted=True)
        columns = [exp.alias_(exp.Count(this=exp.Star()), "matched")]
        if limit:
            columns.append(exp.alias_(exp.ArgMin(this=user_id, expression=user_id.copy(),
                                                 count=exp.Literal.number(limit)), "sample"))
        row = self._fetch(exp.select(*columns).from_(members), lambda c: c.fetchone())
        return row[0], list(row[1] or []) if limit else []

    def members_arrow(self, query: exp.Select) -> pa.Table:
        user_id = exp.column("user_id", table="members", quoted=True)
        ordered = exp.select(user_id).from_(query.subquery("members")).order_by(user_id.copy())
        return self._fetch(ordered, lambda c: c.to_arrow_table()).cast(_USER_ID_ONLY)

    def fetch_arrow(self, query: exp.Select) -> pa.Table:
        return self._fetch(query, lambda c: c.to_arrow_table())

    def write_parquet(self, query: exp.Select, key: str, *, order_by: Sequence[str] = ()) -> Written:
        return self.write_file(query, key, "parquet", order_by=order_by)

    def write_file(self, query: exp.Select, key: str, fmt: ExportFormat, *, order_by: Sequence[str] = (),
                   progress: Callable[[float], None] | None = None) -> Written:
        """``COPY (query) TO ...`` straight to its final place: on S3 by httpfs's multipart
        upload (visible only when complete), locally into the store's scratch directory and
        then renamed under ``key``. Either way nobody sees half a file."""
        if order_by:
            query = exp.select(exp.Star()).from_(query.subquery("q")).order_by(
                *(exp.column(name, table="q", quoted=True) for name in order_by))
        store = self._store
        scratch = None if store.is_remote else store.new_scratch_path(f".{fmt}")
        target = store.duckdb_path(key) if scratch is None else str(scratch)
        sql = f"COPY ({self._sql(query)}) TO {sql_literal(target)} ({_COPY_OPTIONS[fmt]})"
        cursor = self.cursor()
        try:
            with ProgressPoller(cursor.query_progress, progress):
                rows = self._run(cursor, sql).fetchone()[0]
            if scratch is None:
                return Written(key, rows, store.size(key))
            size = scratch.stat().st_size
            store.put_file(key, scratch, move=True)
            return Written(key, rows, size)
        finally:
            cursor.close()
            if scratch is not None:
                scratch.unlink(missing_ok=True)  # a failed COPY's partial file

    def _sql(self, query: exp.Expression) -> str:
        return to_sql(query, self.dialect, pretty=False)

    def _fetch(self, query: exp.Select, read: Callable[[duckdb.DuckDBPyConnection], object]):
        cursor = self.cursor()
        try:
            return read(self._run(cursor, self._sql(query)))
        finally:
            cursor.close()

    @staticmethod
    def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> duckdb.DuckDBPyConnection:
        try:
            return cursor.execute(sql, params)
        except duckdb.IOException as err:  # a file a relation names could not be read
            raise SourceMissing(str(err)) from err

    def _execute(self, sql: str, params: list | None = None) -> list[tuple]:
        cursor = self.cursor()
        try:
            return self._run(cursor, sql, params).fetchall()
        finally:
            cursor.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own DuckDB connection to the shared database); close it after use."""
        if self._con is None:
            with self._lock:
                if self._con is None:
                    con = connect(self._settings)
                    # Lake files are immutable under their keys, so cached footers never go stale.
                    con.execute("SET GLOBAL parquet_metadata_cache = true")
                    con.execute("SET lock_configuration = true")
                    self._con = con
        return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._views.clear()


class DuckDBScans:
    """``read_parquet`` of exactly the given objects, with the file-schema cache that decides
    ``union_by_name`` and the typed NULLs of catalog columns the files lack."""

    supports_row_position = True
    SCHEMAS_KEPT = 100_000  # file schemas remembered (a flusher adds a file a second)

    def __init__(self, store: ObjectStore, execute: Callable[[str, list], list[tuple]]):
        self._store, self._execute = store, execute
        self._lock = threading.Lock()
        self._schemas: dict[str, int] = {}  # file path -> hash of its column names and types
        self._columns: dict[int, frozenset[str]] = {}  # that hash -> the column names

    def scan(self, keys: Sequence[str], columns: dict[str, exp.DataType], *,
             partitions: dict[str, exp.DataType], root: str, row_position: bool = False) -> exp.Expression:
        paths = [self._store.duckdb_path(key) for key in keys]
        schemas = self._schemas_of(paths)
        present = frozenset().union(*(self._columns[s] for s in schemas))
        read = read_parquet(paths, partitions, union_by_name=len(schemas) > 1, row_numbers=row_position)
        extra = [exp.alias_(exp.cast(exp.null(), data.copy()), name, quoted=True)
                 for name, data in columns.items() if name not in present]
        if row_position:
            extra.append(exp.alias_(exp.column(_ROW_NUMBER), rel.ROW_POSITION, quoted=True))
        return exp.select(exp.Star(), *extra).from_(read).subquery() if extra else read

    def _schemas_of(self, paths: list[str]) -> set[int]:
        """The distinct schemas (hashes) of ``paths``, reading the footers of unknown files once."""
        known = {p: self._schemas.get(p) for p in paths}
        unknown = [p for p, digest in known.items() if digest is None]
        if unknown:
            rows = self._execute(
                "SELECT file_name, list((name, type, converted_type) ORDER BY name) FROM parquet_schema(?) "
                "WHERE num_children IS NULL GROUP BY file_name", [unknown])
            with self._lock:
                if len(self._schemas) > self.SCHEMAS_KEPT:  # compacted-away files: forget them
                    self._schemas = {p: d for p, d in known.items() if d is not None}
                for path, schema in rows:
                    self._schemas[path] = known[path] = digest = hash(tuple(map(tuple, schema)))
                    self._columns.setdefault(digest, frozenset(column[0] for column in schema))
        return set(known.values())
