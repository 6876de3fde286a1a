"""Segment definitions -> SQL over one tenant's lake snapshot -> DuckDB results.

The compiler never sees storage. Here each definition is compiled against a *display*
schema whose relations are the placeholder tables ``lake.events`` and ``lake.profiles``
(that is the SQL a preview shows: short, no file paths), and the placeholders are then
swapped, as sqlglot nodes, for ``read_parquet([...committed files...])`` of the tenant's
current snapshot — or for an empty relation with the right columns when the tenant has no
files yet. Nothing user-supplied is ever parsed as SQL.

One in-memory DuckDB database serves the process (``runtime.segment_queries``); every
call takes its own cursor, so requests run in parallel threads without sharing state,
and the Parquet metadata cache is shared between them. In that database each snapshot
gets a view over its files, created once: a query names the view instead of carrying
(and DuckDB re-parsing) a literal list of hundreds of file paths, which was most of
segops' fixed cost per query over hand-written SQL on the same views.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from compiler import (
    DefinitionError,
    EventsRelation,
    LakeSchema,
    ProfilesRelation,
    TypedColumn,
    compile_segment,
    parse_definition,
    to_sql,
)
from compiler.model import Definition, to_utc_naive
from engine.segments import SegmentStore, utc_now
from storage.duck import EVENTS_BASE_SQL_TYPES, KIND_SQL_TYPES, PROFILES_BASE_SQL_TYPES, connect

if TYPE_CHECKING:
    from engine.runtime import Runtime

PLACEHOLDER_DB = "lake"
EVENTS_TABLE = "events"
PROFILES_TABLE = "profiles"
MAX_PREVIEW_LIMIT = 1000
# Errors that only mean "no such data yet", not "invalid definition".
DATA_DEPENDENT_ERRORS = frozenset({"unknown_property", "unknown_trait"})
_HIVE_TYPES = {"tenant_id": "BIGINT", "event_date": "DATE"}


class SegmentQueries:
    """The process's DuckDB database for segment queries (``runtime.segment_queries``)."""

    # Views kept per tenant and relation: a query compiled against a slightly older
    # snapshot (another thread committed meanwhile) still finds its view.
    VIEWS_KEPT = 4

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._views: dict[tuple[int, str], list[str]] = {}
        self._lakes: dict[int, TenantLake] = {}  # tenant -> its latest described snapshot
        runtime.on_stop(self.close)

    def lake(self, key: tuple[int, int, int], build: Callable[[], "TenantLake"]) -> "TenantLake":
        """The TenantLake for ``key``, built once per snapshot (it holds every file path)."""
        cached = self._lakes.get(key[0])
        if cached is None or cached.key != key:
            cached = self._lakes[key[0]] = build()
        return cached

    def relations(self, lake: "TenantLake") -> dict[str, exp.Expression]:
        """The lake's relations as views of this database (created on first use)."""
        tenant_id, events_seq, profiles_seq = lake.key
        out = {}
        for table, seq in ((EVENTS_TABLE, events_seq), (PROFILES_TABLE, profiles_seq)):
            name = f"lake_t{tenant_id}_{table}_s{seq}"
            out[table] = exp.Table(this=exp.to_identifier(name, quoted=True))
            key = (tenant_id, table)
            if name in self._views.get(key, ()):
                continue
            body = exp.select(exp.Star()).from_(lake.relations[table].copy()).sql(dialect="duckdb")
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
        return out

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


def _read_parquet(paths: Iterable[str], hive_types: dict[str, str]) -> exp.Expression:
    """``read_parquet([paths], hive_partitioning=true, union_by_name=true, hive_types={...})``."""
    def option(name: str, value: exp.Expression) -> exp.Expression:
        return exp.EQ(this=exp.column(name), expression=value)

    types = exp.Struct(expressions=[
        exp.PropertyEQ(this=exp.Literal.string(col), expression=exp.Literal.string(sql_type))
        for col, sql_type in hive_types.items()])
    return exp.Table(this=exp.ReadParquet(expressions=[
        exp.Array(expressions=[exp.Literal.string(path) for path in paths]),
        option("hive_partitioning", exp.true()),
        option("union_by_name", exp.true()),
        option("hive_types", types),
    ]))


def _empty_relation(columns: dict[str, str]) -> exp.Expression:
    """A relation with ``columns`` (name -> SQL type) and no rows (read_parquet([]) is an error)."""
    return exp.select(*(
        exp.alias_(exp.cast(exp.null(), sql_type), name, quoted=True) for name, sql_type in columns.items()
    )).where(exp.false()).subquery()


@dataclass(frozen=True)
class TenantLake:
    """What one tenant's queries run over: the display schema plus the relations behind it."""

    schema: LakeSchema
    relations: dict[str, exp.Expression]  # placeholder table name -> real relation
    key: tuple[int, int, int]  # (tenant_id, events snapshot seq, profiles snapshot seq)


def tenant_lake(runtime: Runtime, tenant_id: int) -> TenantLake:
    """Describe the tenant's current events and profiles snapshots for the compiler."""
    events = runtime.lake.snapshot(tenant_id)
    profiles = runtime.lake.profiles_snapshot(tenant_id)
    key = (int(tenant_id), events.seq, profiles.seq)
    return runtime.segment_queries.lake(key, lambda: _describe(key, events, profiles))


def _describe(key: tuple[int, int, int], events, profiles) -> TenantLake:
    properties = {name: TypedColumn(column=col, kind=kind) for name, (col, kind) in events.properties.items()}
    traits = {name: TypedColumn(column=col, kind=kind) for name, (col, kind) in profiles.traits.items()}
    if events.files:
        events_relation = _read_parquet(events.files, _HIVE_TYPES)
    else:
        events_relation = _empty_relation({**EVENTS_BASE_SQL_TYPES, **{
            col: KIND_SQL_TYPES[kind] for col, kind in events.properties.values()}})
    if profiles.file:
        profiles_relation = _read_parquet([profiles.file], {"tenant_id": "BIGINT"})
    else:
        profiles_relation = _empty_relation({**PROFILES_BASE_SQL_TYPES, **{
            col: KIND_SQL_TYPES[kind] for col, kind in profiles.traits.values()}})
    schema = LakeSchema(
        events=EventsRelation(relation=_placeholder(EVENTS_TABLE), properties=properties),
        profiles=ProfilesRelation(relation=_placeholder(PROFILES_TABLE), traits=traits),
    )
    return TenantLake(schema, {EVENTS_TABLE: events_relation, PROFILES_TABLE: profiles_relation}, key)


# -- compiling --------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledSegment:
    """A compiled definition: ``query`` (over the placeholders) selects the members' user_id."""

    query: exp.Select
    lake: TenantLake
    as_of: datetime

    def display_sql(self, pretty: bool = True) -> str:
        return to_sql(self.query, dialect="duckdb", pretty=pretty)

    def executable(self, relations: dict[str, exp.Expression] | None = None) -> exp.Select:
        """The query with the placeholders replaced by the snapshot's relations (default:
        ``read_parquet`` of its files, runnable on any DuckDB connection; the segment
        query database passes its views)."""
        relations = relations or self.lake.relations

        def bind(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.db == PLACEHOLDER_DB and node.name in relations:
                relation = relations[node.name].copy()
                alias = node.args.get("alias")
                if alias is not None:
                    relation.set("alias", alias.copy())
                return relation
            return node

        return self.query.transform(bind)


def normalize_as_of(as_of: datetime | None) -> datetime:
    """Naive UTC; now when not given."""
    return utc_now() if as_of is None else to_utc_naive(as_of)


def compile_definition(runtime: Runtime, tenant_id: int, definition: Definition | Any, *,
                       as_of: datetime | None = None,
                       resolve: Callable[[int], Definition] | None = None,
                       lake: TenantLake | None = None) -> CompiledSegment:
    """Compile for the tenant's current snapshot. Segment references resolve to the current
    definitions of the tenant's own segments unless ``resolve`` says otherwise.
    Raises DefinitionError (paths rooted at ``definition``)."""
    definition = parse_definition(definition)
    as_of = normalize_as_of(as_of)
    lake = lake or tenant_lake(runtime, tenant_id)
    resolve = resolve or SegmentStore(runtime.meta).resolver(tenant_id)
    query = compile_segment(definition, lake.schema, tenant_id=tenant_id, as_of=as_of, resolve_segment=resolve)
    return CompiledSegment(query, lake, as_of)


def validate_definition(runtime: Runtime, tenant_id: int, obj: Any, *, segment_id: int | None = None) -> Definition:
    """Check ``obj`` as saving it requires: structure, value types against the property
    catalog, references to the tenant's own segments and, when ``segment_id`` is given, no
    cycle back to that segment. A property or trait the lake has not seen yet is accepted
    (segments are often defined before their data arrives); previews and computations
    report it until it exists."""
    definition = parse_definition(obj)
    overrides = {segment_id: definition} if segment_id is not None else None
    try:
        compile_definition(runtime, tenant_id, definition,
                           resolve=SegmentStore(runtime.meta).resolver(tenant_id, overrides))
    except DefinitionError as err:
        blocking = [error for error in err.errors if error.code not in DATA_DEPENDENT_ERRORS]
        if blocking:
            raise DefinitionError(blocking) from None
    return definition


# -- running ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    matched_users: int
    sample_user_ids: list[str]
    compiled: CompiledSegment

    @property
    def sql(self) -> str:
        """The display SQL, rendered only when someone shows it."""
        return self.compiled.display_sql()

    @property
    def as_of(self) -> datetime:
        return self.compiled.as_of

    def to_json(self) -> dict[str, Any]:
        return {"matched_users": self.matched_users, "sample_user_ids": self.sample_user_ids, "sql": self.sql}


def _members(runtime: Runtime, compiled: CompiledSegment, name: str = "members") -> tuple[exp.Subquery, exp.Column]:
    """The members query over the segment query database's snapshot views."""
    relations = runtime.segment_queries.relations(compiled.lake)
    return compiled.executable(relations).subquery(name), exp.column("user_id", table=name, quoted=True)


def run_preview(runtime: Runtime, compiled: CompiledSegment, limit: int = 10) -> Preview:
    """Count and the ``limit`` smallest user ids in one pass (``arg_min(x, x, n)`` keeps a top-n
    heap instead of sorting every member)."""
    if not 0 <= limit <= MAX_PREVIEW_LIMIT:
        raise ValueError(f"limit must be within 0..{MAX_PREVIEW_LIMIT}")
    members, user_id = _members(runtime, compiled)
    columns = [exp.alias_(exp.Count(this=exp.Star()), "matched")]
    if limit:
        columns.append(exp.alias_(exp.Anonymous(this="arg_min", expressions=[
            user_id, user_id.copy(), exp.Literal.number(limit)]), "sample"))
    sql = exp.select(*columns).from_(members).sql(dialect="duckdb")
    cursor = runtime.segment_queries.cursor()
    try:
        row = cursor.execute(sql).fetchone()
    finally:
        cursor.close()
    sample = list(row[1] or []) if limit else []
    return Preview(matched_users=row[0], sample_user_ids=sample, compiled=compiled)


def preview(runtime: Runtime, tenant_id: int, definition: Definition | Any, *, limit: int = 10,
            as_of: datetime | None = None) -> Preview:
    return run_preview(runtime, compile_definition(runtime, tenant_id, definition, as_of=as_of), limit)


def member_table(runtime: Runtime, compiled: CompiledSegment) -> pa.Table:
    """All members as an Arrow table with one column ``user_id`` (string), sorted ascending."""
    members, user_id = _members(runtime, compiled)
    sql = exp.select(user_id).from_(members).order_by(user_id.copy()).sql(dialect="duckdb")
    cursor = runtime.segment_queries.cursor()
    try:
        table = cursor.execute(sql).to_arrow_table()
    finally:
        cursor.close()
    return table.cast(pa.schema([pa.field("user_id", pa.string())]))


def evaluate_for_users(runtime: Runtime, tenant_id: int, definition: Definition | Any,
                       user_ids: Iterable[str], as_of: datetime | None = None) -> set[str]:
    """Which of ``user_ids`` the definition matches now (or at ``as_of``): on-demand membership
    for segments that have not been computed yet. Raises DefinitionError."""
    wanted = sorted({str(user) for user in user_ids})
    if not wanted:
        return set()
    compiled = compile_definition(runtime, tenant_id, definition, as_of=as_of)
    members, user_id = _members(runtime, compiled)
    sql = (exp.select(user_id).from_(members)
           .where(exp.In(this=user_id.copy(), expressions=[exp.Literal.string(u) for u in wanted]))
           .sql(dialect="duckdb"))
    cursor = runtime.segment_queries.cursor()
    try:
        return {row[0] for row in cursor.execute(sql).fetchall()}
    finally:
        cursor.close()


__all__ = [
    "SegmentQueries", "TenantLake", "tenant_lake", "CompiledSegment", "compile_definition",
    "validate_definition", "Preview", "run_preview", "preview", "member_table", "evaluate_for_users",
    "normalize_as_of", "DefinitionError", "MAX_PREVIEW_LIMIT",
]
