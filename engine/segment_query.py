"""Segment definitions -> SQL over one tenant's lake snapshot -> DuckDB results.

The compiler never sees storage. Here each definition is compiled against a *display*
schema whose relations are the placeholder tables ``lake.events`` and ``lake.profiles``
(that is the SQL a preview shows: short, no file paths), and the placeholders are then
swapped, as sqlglot nodes, for ``read_parquet([...committed files...])`` of the tenant's
current snapshot — or for an empty relation with the right columns when the tenant has no
files yet. Nothing user-supplied is ever parsed as SQL.

One in-memory DuckDB database serves the process (``runtime.segment_queries``); every
call takes its own cursor, so requests run in parallel threads without sharing state,
and the Parquet metadata cache is shared between them.
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

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        runtime.on_stop(self.close)

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


def tenant_lake(runtime: Runtime, tenant_id: int) -> TenantLake:
    """Describe the tenant's current events and profiles snapshots for the compiler."""
    events = runtime.lake.snapshot(tenant_id)
    profiles = runtime.lake.profiles_snapshot(tenant_id)
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
    return TenantLake(schema, {EVENTS_TABLE: events_relation, PROFILES_TABLE: profiles_relation})


# -- compiling --------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledSegment:
    """A compiled definition: ``query`` (over the placeholders) selects the members' user_id."""

    query: exp.Select
    lake: TenantLake
    as_of: datetime

    def display_sql(self, pretty: bool = True) -> str:
        return to_sql(self.query, dialect="duckdb", pretty=pretty)

    def executable(self) -> exp.Select:
        """The query with the placeholders replaced by the snapshot's relations."""
        def bind(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.db == PLACEHOLDER_DB and node.name in self.lake.relations:
                relation = self.lake.relations[node.name].copy()
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
    sql: str
    as_of: datetime

    def to_json(self) -> dict[str, Any]:
        return {"matched_users": self.matched_users, "sample_user_ids": self.sample_user_ids, "sql": self.sql}


def _members(compiled: CompiledSegment, name: str = "members") -> tuple[exp.Subquery, exp.Column]:
    return compiled.executable().subquery(name), exp.column("user_id", table=name, quoted=True)


def run_preview(runtime: Runtime, compiled: CompiledSegment, limit: int = 10) -> Preview:
    """Count and the ``limit`` smallest user ids in one pass (``arg_min(x, x, n)`` keeps a top-n
    heap instead of sorting every member)."""
    if not 0 <= limit <= MAX_PREVIEW_LIMIT:
        raise ValueError(f"limit must be within 0..{MAX_PREVIEW_LIMIT}")
    members, user_id = _members(compiled)
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
    return Preview(matched_users=row[0], sample_user_ids=sample, sql=compiled.display_sql(), as_of=compiled.as_of)


def preview(runtime: Runtime, tenant_id: int, definition: Definition | Any, *, limit: int = 10,
            as_of: datetime | None = None) -> Preview:
    return run_preview(runtime, compile_definition(runtime, tenant_id, definition, as_of=as_of), limit)


def member_table(runtime: Runtime, compiled: CompiledSegment) -> pa.Table:
    """All members as an Arrow table with one column ``user_id`` (string), sorted ascending."""
    members, user_id = _members(compiled)
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
    members, user_id = _members(compiled)
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
