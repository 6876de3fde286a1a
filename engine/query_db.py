"""The segment query database: one in-memory DuckDB per process and what queries read.

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
  (files are immutable, so each file's schema is read once per process).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import duckdb
from sqlglot import exp

from compiler import EventsRelation, LakeSchema, ProfilesRelation, TypedColumn
from storage.duck import BASE_ROW_COLUMN, EVENTS_BASE_SQL_TYPES, KIND_SQL_TYPES, PROFILES_BASE_SQL_TYPES, connect

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from storage.snapshots import EventsSnapshot, ProfilesSnapshot

PLACEHOLDER_DB = "lake"
EVENTS_TABLE = "events"
PROFILES_TABLE = "profiles"
_HIVE_TYPES = {"tenant_id": "BIGINT", "event_date": "DATE"}
_PROFILE_HIVE_TYPES = {"tenant_id": "BIGINT"}


class SegmentQueries:
    """The process's DuckDB database for segment queries (``runtime.segment_queries``)."""

    # Views kept per tenant and relation: a query compiled against a slightly older
    # snapshot (another thread committed meanwhile) still finds its view.
    VIEWS_KEPT = 4
    SCHEMAS_KEPT = 100_000  # file schemas remembered (a flusher adds a file a second)

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._views: dict[tuple[int, str], list[str]] = {}
        self._lakes: dict[int, TenantLake] = {}  # tenant -> its latest described snapshot
        self._schemas: dict[str, int] = {}  # file path -> hash of its column names and types
        runtime.on_stop(self.close)

    def lake(self, key: tuple[int, int, int], build: Callable[[], "TenantLake"]) -> "TenantLake":
        """The TenantLake for ``key``, built once per snapshot (it holds every file path)."""
        cached = self._lakes.get(key[0])
        if cached is None or cached.key != key:
            cached = self._lakes[key[0]] = build()
        return cached

    def relations(self, lake: "TenantLake",
                  event_dates: tuple[date | None, date] | None = None) -> dict[str, exp.Expression]:
        """What a query over ``lake`` should read in this database: views of the snapshot,
        or for events within ``event_dates`` (first day or None, last day) just those days' files."""
        out = {PROFILES_TABLE: self._view(lake, PROFILES_TABLE, lake.profiles.seq,
                                          lambda: lake.relations[PROFILES_TABLE])}
        files = lake.events.files
        if event_dates is not None and event_dates[0] is not None:
            files = lake.events.files_between(*event_dates)
        if files == lake.events.files:
            out[EVENTS_TABLE] = self._view(lake, EVENTS_TABLE, lake.events.seq, lambda: (
                _read_parquet(files, _HIVE_TYPES, self._mixed_schemas(files)) if files
                else lake.relations[EVENTS_TABLE]))
        elif files:
            out[EVENTS_TABLE] = _read_parquet(files, _HIVE_TYPES, self._mixed_schemas(files))
        else:
            out[EVENTS_TABLE] = _empty_events(lake.events)
        return out

    def _view(self, lake: "TenantLake", table: str, seq: int, relation: Callable[[], exp.Expression]) -> exp.Table:
        tenant_id = lake.key[0]
        name = f"lake_t{tenant_id}_{table}_s{seq}"
        key = (tenant_id, table)
        if name not in self._views.get(key, ()):
            body = exp.select(exp.Star()).from_(relation()).sql(dialect="duckdb")
            cursor = self.cursor()
            try:
                cursor.execute(f'CREATE OR REPLACE VIEW "{name}" AS {body}')
                with self._lock:
                    names = self._views.setdefault(key, [])
                    if name not in names:
                        names.append(name)
                    stale, names[:] = names[:-self.VIEWS_KEPT], names[-self.VIEWS_KEPT:]
                for old in stale:
                    cursor.execute(f'DROP VIEW IF EXISTS "{old}"')
            finally:
                cursor.close()
        return exp.Table(this=exp.to_identifier(name, quoted=True))

    def _mixed_schemas(self, files: Iterable[str]) -> bool:
        """Do ``files`` differ in their columns (then DuckDB must union them by name)?"""
        files = list(files)
        unknown = [f for f in files if f not in self._schemas]
        if unknown:
            cursor = self.cursor()
            try:
                rows = cursor.execute(
                    "SELECT file_name, list((name, type, converted_type) ORDER BY name) FROM parquet_schema(?) "
                    "WHERE num_children IS NULL GROUP BY file_name", [unknown]).fetchall()
            finally:
                cursor.close()
            with self._lock:
                if len(self._schemas) > self.SCHEMAS_KEPT:  # compacted-away files: forget them
                    self._schemas = {f: self._schemas[f] for f in files if f in self._schemas}
                self._schemas.update((path, hash(tuple(map(tuple, columns)))) for path, columns in rows)
        return len({self._schemas.get(f) for f in files}) > 1

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own DuckDB connection to the shared database); close it after use."""
        if self._con is None:
            with self._lock:
                if self._con is None:
                    con = connect(self._runtime.settings)
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


# -- relations --------------------------------------------------------------------------
def _placeholder(name: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(PLACEHOLDER_DB))


def _read_parquet(paths: Iterable[str], hive_types: dict[str, str], union_by_name: bool = True,
                  row_numbers: bool = False) -> exp.Expression:
    """``read_parquet([paths], hive_partitioning=true, union_by_name=..., hive_types={...})``
    (and ``file_row_number=true`` with ``row_numbers``)."""
    def option(name: str, value: exp.Expression) -> exp.Expression:
        return exp.EQ(this=exp.column(name), expression=value)

    types = exp.Struct(expressions=[
        exp.PropertyEQ(this=exp.Literal.string(col), expression=exp.Literal.string(sql_type))
        for col, sql_type in hive_types.items()])
    return exp.Table(this=exp.ReadParquet(expressions=[
        exp.Array(expressions=[exp.Literal.string(path) for path in paths]),
        option("hive_partitioning", exp.true()),
        option("union_by_name", exp.true() if union_by_name else exp.false()),
        option("hive_types", types),
        *([option("file_row_number", exp.true())] if row_numbers else []),
    ]))


def _empty_relation(columns: dict[str, str]) -> exp.Expression:
    """A relation with ``columns`` (name -> SQL type) and no rows (read_parquet([]) is an error)."""
    return exp.select(*(
        exp.alias_(exp.cast(exp.null(), sql_type), name, quoted=True) for name, sql_type in columns.items()
    )).where(exp.false()).subquery()


def profiles_expression(profiles: "ProfilesSnapshot") -> exp.Expression:
    """The snapshot's profile rows as a relation: the base file, with the delta's rows
    replacing the base rows at the positions they name (``storage.duck.current_profiles_sql``)."""
    if not profiles.file:
        return _empty_relation({**PROFILES_BASE_SQL_TYPES, **{
            col: KIND_SQL_TYPES[kind] for col, kind in profiles.traits.values()}})
    if not profiles.delta:
        return _read_parquet([profiles.file], _PROFILE_HIVE_TYPES, union_by_name=False)
    base = _read_parquet([profiles.file], _PROFILE_HIVE_TYPES, union_by_name=False, row_numbers=True)
    delta = _read_parquet([profiles.delta], _PROFILE_HIVE_TYPES, union_by_name=False)
    replaced = exp.select(exp.column(BASE_ROW_COLUMN)).from_(delta.copy()).where(
        exp.Not(this=exp.Is(this=exp.column(BASE_ROW_COLUMN), expression=exp.null()))).subquery("d")
    kept = exp.select(exp.Star(except_=[exp.column("file_row_number")])).from_(base.as_("o")).join(
        replaced, join_type="anti", on=exp.EQ(this=exp.column("file_row_number", table="o"),
                                              expression=exp.column(BASE_ROW_COLUMN, table="d")))
    current = exp.select(exp.Star(except_=[exp.column(BASE_ROW_COLUMN)])).from_(delta)
    return exp.Union(this=kept, expression=current, distinct=False, by_name=True).subquery()


@dataclass(frozen=True)
class TenantLake:
    """What one tenant's queries run over: the display schema plus the relations behind it."""

    schema: LakeSchema
    relations: dict[str, exp.Expression]  # placeholder -> read_parquet of every file (runs on any DuckDB)
    key: tuple[int, int, int]  # (tenant_id, events snapshot seq, profiles snapshot seq)
    events: "EventsSnapshot"
    profiles: "ProfilesSnapshot"


def tenant_lake(runtime: Runtime, tenant_id: int) -> TenantLake:
    """Describe the tenant's current events and profiles snapshots for the compiler."""
    events = runtime.lake.snapshot(tenant_id)
    profiles = runtime.lake.profiles_snapshot(tenant_id)
    key = (int(tenant_id), events.seq, profiles.seq)
    return runtime.segment_queries.lake(key, lambda: _describe(key, events, profiles))


def _empty_events(events: "EventsSnapshot") -> exp.Expression:
    return _empty_relation({**EVENTS_BASE_SQL_TYPES, **{
        col: KIND_SQL_TYPES[kind] for col, kind in events.properties.values()}})


def _describe(key: tuple[int, int, int], events: "EventsSnapshot", profiles: "ProfilesSnapshot") -> TenantLake:
    properties = {name: TypedColumn(column=col, kind=kind) for name, (col, kind) in events.properties.items()}
    traits = {name: TypedColumn(column=col, kind=kind) for name, (col, kind) in profiles.traits.items()}
    events_relation = _read_parquet(events.files, _HIVE_TYPES) if events.files else _empty_events(events)
    profiles_relation = profiles_expression(profiles)
    schema = LakeSchema(
        events=EventsRelation(relation=_placeholder(EVENTS_TABLE), properties=properties),
        profiles=ProfilesRelation(relation=_placeholder(PROFILES_TABLE), traits=traits),
    )
    return TenantLake(schema, {EVENTS_TABLE: events_relation, PROFILES_TABLE: profiles_relation}, key,
                      events, profiles)


