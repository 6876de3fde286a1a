"""Segment definitions -> SQL over one tenant's lake snapshot -> DuckDB results.

The compiler never sees storage. Here each definition is compiled against a *display*
schema whose relations are the placeholder tables ``lake.events`` and ``lake.profiles``
(that is the SQL a preview shows: short, no file paths), and the placeholders are then
swapped, as sqlglot nodes, for ``read_parquet([...committed files...])`` of the tenant's
current snapshot — or for an empty relation with the right columns when the tenant has no
files yet. Nothing user-supplied is ever parsed as SQL.

Queries run on a query backend (``backends/``): previews and on-demand
evaluation on the interactive one, computations on the one the caller passes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic_core import PydanticCustomError
from sqlglot import exp

from common.time import naive_utc_now
from compiler import EVENT_DATES, DefinitionError, compile_segment, parse_definition, to_sql
from compiler.model import Definition, parse_timestamp
from compiler.timestamps import InstantOutOfRange, to_utc_naive
from backends.base import QueryBackend, Relations
from backends.relations import TenantLake, bind
from backends.registry import Backends
from engine.segments.store import SegmentStore

MAX_PREVIEW_LIMIT = 1000
MAX_CATALOG_EVENT_TYPES = 1000
# Errors that only mean "no such data yet", not "invalid definition".
DATA_DEPENDENT_ERRORS = frozenset({"unknown_property", "unknown_trait"})


# -- compiling --------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledSegment:
    """A compiled definition: ``query`` (over the placeholders) selects the members' user_id."""

    query: exp.Select
    lake: TenantLake
    as_of: datetime

    def display_sql(self, pretty: bool = True, dialect: str = "duckdb") -> str:
        return to_sql(self.query, dialect=dialect, pretty=pretty)

    def executable(self, backend: QueryBackend) -> exp.Select:
        """The query bound to ``backend``'s relations of the snapshot (only the days of events
        its windows reach, ``EVENT_DATES``)."""
        relations: Relations = backend.relations(self.lake, self.query.meta.get(EVENT_DATES))
        return bind(self.query, relations)


def normalize_as_of(as_of: datetime | str | None) -> datetime:
    """Naive UTC; now when not given. A string (a request's ``as_of``) is read like a
    definition's timestamps; DefinitionError at ``as_of`` if it is invalid or its instant is
    outside years 1-9999 (``compiler.timestamps``)."""
    if as_of is None:
        return naive_utc_now()
    try:
        return parse_timestamp(as_of) if isinstance(as_of, str) else to_utc_naive(as_of)
    except InstantOutOfRange as err:
        raise DefinitionError.single("as_of", str(err), "invalid_timestamp") from None
    except PydanticCustomError as err:  # what parse_timestamp raises, with our stable code
        raise DefinitionError.single("as_of", err.message(), err.type) from None


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

    def to_json(self, dialect: str = "duckdb") -> dict[str, Any]:
        """``sql`` in ``dialect`` (one of compiler.DIALECTS); the count always comes from the backend."""
        return {"matched_users": self.matched_users, "sample_user_ids": self.sample_user_ids,
                "sql": self.compiled.display_sql(dialect=dialect)}


class SegmentQueries:
    """Segment definitions compiled against a tenant's snapshot and run on the query backends:
    previews and on-demand evaluation on the interactive one, computations on the one the caller passes."""

    def __init__(self, segments: SegmentStore, backends: Backends):
        self.segments = segments
        self.backends = backends

    def compile(self, tenant_id: int, definition: Definition | Any, *, as_of: datetime | str | None = None,
                resolve: Callable[[int], Definition] | None = None,
                lake: TenantLake | None = None) -> CompiledSegment:
        """Compile for the tenant's current snapshot. Segment references resolve to the current
        definitions of the tenant's own segments unless ``resolve`` says otherwise.
        Raises DefinitionError (paths rooted at ``definition``)."""
        definition = parse_definition(definition)
        as_of = normalize_as_of(as_of)
        lake = lake or self.backends.tenant_lake(tenant_id)
        resolve = resolve or self.segments.resolver(tenant_id)
        query = compile_segment(definition, lake.schema, tenant_id=tenant_id, as_of=as_of, resolve_segment=resolve)
        return CompiledSegment(query, lake, as_of)

    def validate(self, tenant_id: int, obj: Any, *, segment_id: int | None = None) -> Definition:
        """Check ``obj`` as saving it requires: structure, value types against the property
        catalog, references to the tenant's own segments and, when ``segment_id`` is given, no
        cycle back to that segment. A property or trait the lake has not seen yet is accepted
        (segments are often defined before their data arrives); previews and computations
        report it until it exists."""
        definition = parse_definition(obj)
        overrides = {segment_id: definition} if segment_id is not None else None
        try:
            self.compile(tenant_id, definition, resolve=self.segments.resolver(tenant_id, overrides))
        except DefinitionError as err:
            blocking = [error for error in err.errors if error.code not in DATA_DEPENDENT_ERRORS]
            if blocking:
                raise DefinitionError(blocking) from None
        return definition

    def run_preview(self, compiled: CompiledSegment, limit: int = 10) -> Preview:
        """Count and the ``limit`` smallest user ids, on the interactive backend."""
        if not 0 <= limit <= MAX_PREVIEW_LIMIT:
            raise ValueError(f"limit must be within 0..{MAX_PREVIEW_LIMIT}")
        backend = self.backends.interactive
        matched, sample = backend.count_and_sample(compiled.executable(backend), limit)
        return Preview(matched_users=matched, sample_user_ids=sample, compiled=compiled)

    def preview(self, tenant_id: int, definition: Definition | Any, *, limit: int = 10,
                as_of: datetime | str | None = None) -> Preview:
        return self.run_preview(self.compile(tenant_id, definition, as_of=as_of), limit)

    def member_table(self, compiled: CompiledSegment, backend: QueryBackend | None = None) -> pa.Table:
        """All members as an Arrow table with one column ``user_id`` (string), sorted ascending;
        on ``backend`` (default: the interactive one)."""
        backend = backend or self.backends.interactive
        return backend.members_arrow(compiled.executable(backend))

    def evaluate_for_users(self, tenant_id: int, definition: Definition | Any, user_ids: Iterable[str],
                           as_of: datetime | None = None) -> set[str]:
        """Which of ``user_ids`` the definition matches now (or at ``as_of``): on-demand membership
        for segments that have not been computed yet. Raises DefinitionError."""
        wanted = sorted({str(user) for user in user_ids})
        if not wanted:
            return set()
        compiled = self.compile(tenant_id, definition, as_of=as_of)
        backend = self.backends.interactive
        user_id = exp.column("user_id", table="members", quoted=True)
        query = (exp.select(user_id).from_(compiled.executable(backend).subquery("members"))
                 .where(exp.In(this=user_id.copy(), expressions=[exp.Literal.string(u) for u in wanted])))
        return set(backend.fetch_arrow(query).column(0).to_pylist())

    def catalog(self, tenant_id: int) -> dict[str, list[dict]]:
        """What a builder autocompletes from (the web console): ``event_types`` ``[{event_type, count}]``
        (most frequent first, at most MAX_CATALOG_EVENT_TYPES), ``properties`` and ``traits``
        ``[{name, kind}]`` (by name), as the tenant's current snapshot knows them. The counts scan one
        column on the interactive backend."""
        lake = self.backends.tenant_lake(tenant_id)
        event_types: list[dict] = []
        if lake.events.files:
            backend = self.backends.interactive
            event_type, count = exp.column("event_type"), exp.column("n")
            query = (exp.select(event_type, exp.alias_(exp.Count(this=exp.Star()), "n"))
                     .from_(backend.relations(lake).events).group_by(event_type.copy())
                     .order_by(exp.Ordered(this=count, desc=True), event_type.copy()).limit(MAX_CATALOG_EVENT_TYPES))
            found = backend.fetch_arrow(query).to_pydict()
            event_types = [{"event_type": name, "count": n} for name, n in zip(found["event_type"], found["n"])]

        def kinds(columns: dict) -> list[dict]:
            return [{"name": name, "kind": typed.kind} for name, typed in sorted(columns.items())]

        return {"event_types": event_types, "properties": kinds(lake.schema.events.properties),
                "traits": kinds(lake.schema.profiles.traits)}


__all__ = [
    "TenantLake", "CompiledSegment", "SegmentQueries", "Preview", "normalize_as_of", "DefinitionError",
    "MAX_PREVIEW_LIMIT", "MAX_CATALOG_EVENT_TYPES",
]
