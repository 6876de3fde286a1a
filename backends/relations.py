"""The one lake-to-relation builder: a tenant's snapshot as sqlglot relations for any backend.

The compiler sees the *display* schema (placeholder tables ``lake.events`` / ``lake.profiles``:
the SQL a preview shows, without file paths); ``bind`` swaps the placeholders, as nodes, for a
backend's relations. Those are built here from a backend's ``Scans`` leaf reader; the
profiles base+delta rule is storage's (``storage.profiles.current_profiles``, which the lake
writer reads too), with an explicit column list every backend runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlglot import exp

from backends.base import Relations, Scans, TenantLake
from compiler import EventsRelation, LakeSchema, ProfilesRelation, TypedColumn
from storage.duck import BASE_ROW_COLUMN, EVENTS_BASE_SQL_TYPES, KIND_SQL_TYPES, PROFILES_BASE_SQL_TYPES
# ROW_POSITION and aliased are used through this module by the backends and engine.exports.
from storage.profiles import ROW_POSITION, aliased, current_profiles, select_columns  # noqa: F401
from storage.snapshots import EventsSnapshot, FileEntry, ProfilesSnapshot

PLACEHOLDER_DB = "lake"
EVENTS_TABLE = "events"
PROFILES_TABLE = "profiles"
EVENTS_ROOT, PROFILES_ROOT = "events/", "profiles/"


def data_type(name: str) -> exp.DataType:
    """A lake type name as a node; the lake's TIMESTAMP is naive UTC (the compiler's TIMESTAMPNTZ:
    DuckDB renders TIMESTAMP, Spark TIMESTAMP_NTZ)."""
    if name.upper() in ("TIMESTAMP", "TIMESTAMPNTZ"):
        return exp.DataType(this=exp.DataType.Type.TIMESTAMPNTZ)
    return exp.DataType.build(name)


_EVENT_PARTITIONS = {"tenant_id": data_type("BIGINT"), "event_date": data_type("DATE")}
_PROFILE_PARTITIONS = {"tenant_id": data_type("BIGINT")}
_EVENT_COLUMNS = {c: data_type(t) for c, t in EVENTS_BASE_SQL_TYPES.items() if c not in _EVENT_PARTITIONS}
_PROFILE_COLUMNS = {c: data_type(t) for c, t in PROFILES_BASE_SQL_TYPES.items() if c not in _PROFILE_PARTITIONS}
MEMBERS_COLUMNS = {"user_id": data_type("VARCHAR"), "computed_at": data_type("TIMESTAMP")}
_KIND_TYPES = {kind: data_type(name) for kind, name in KIND_SQL_TYPES.items()}


def describe(events: EventsSnapshot, profiles: ProfilesSnapshot) -> TenantLake:
    """The display schema of the two snapshots (for the compiler) and the snapshots."""
    def typed(catalog: dict[str, tuple[str, str]]) -> dict[str, TypedColumn]:
        return {name: TypedColumn(column=col, kind=kind) for name, (col, kind) in catalog.items()}

    schema = LakeSchema(
        events=EventsRelation(relation=placeholder(EVENTS_TABLE), properties=typed(events.properties)),
        profiles=ProfilesRelation(relation=placeholder(PROFILES_TABLE), traits=typed(profiles.traits)),
    )
    return TenantLake(schema, (int(events.tenant_id), events.seq, profiles.seq), events, profiles)


def placeholder(name: str) -> exp.Table:
    """The display schema's table ``lake.<name>`` (``EVENTS_TABLE``, ``PROFILES_TABLE``): what ``bind`` swaps."""
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(PLACEHOLDER_DB))


def event_columns(snapshot: EventsSnapshot) -> dict[str, exp.DataType]:
    """The events catalog's file columns (base and ``p_*``; partitions aside)."""
    return {**_EVENT_COLUMNS, **{col: _KIND_TYPES[kind] for col, kind in snapshot.properties.values()}}


def profile_columns(snapshot: ProfilesSnapshot) -> dict[str, exp.DataType]:
    """The profiles catalog's file columns (base and ``t_*``; ``tenant_id`` aside)."""
    return {**_PROFILE_COLUMNS, **{col: _KIND_TYPES[kind] for col, kind in snapshot.traits.values()}}


def events(scans: Scans, snapshot: EventsSnapshot, entries: Sequence[FileEntry]) -> exp.Expression:
    """The events of ``entries`` (files of ``snapshot``) with the snapshot's catalog columns."""
    columns = event_columns(snapshot)
    if not entries:
        return empty({**columns, **_EVENT_PARTITIONS})
    return scans.scan([e.key for e in entries], columns, partitions=_EVENT_PARTITIONS, root=EVENTS_ROOT)


def profiles(scans: Scans, snapshot: ProfilesSnapshot, *, by_user_id: bool | None = None) -> exp.Expression:
    """One row per user: the base file, with each delta row replacing the base row it names
    (``storage.profiles.current_profiles``, the rule the lake writer reads too). By row position
    where the scans support it, else by user id (``by_user_id`` None: whichever they support)."""
    columns = profile_columns(snapshot)
    names = [*columns, *_PROFILE_PARTITIONS]
    if snapshot.base_key is None:
        return empty({**columns, **_PROFILE_PARTITIONS})
    scan = {"partitions": _PROFILE_PARTITIONS, "root": PROFILES_ROOT}
    if by_user_id is None:
        by_user_id = not scans.supports_row_position
    delta = None
    if snapshot.delta_key is not None:
        delta = scans.scan([snapshot.delta_key], {**columns, BASE_ROW_COLUMN: data_type("BIGINT")}, **scan)
    base = scans.scan([snapshot.base_key], columns, row_position=delta is not None and not by_user_id, **scan)
    return current_profiles(base, delta, names, by_user_id=by_user_id)


def members(scans: Scans, key: str) -> exp.Expression:
    """A computation's members file: ``user_id``, ``computed_at`` (sorted by user_id)."""
    return select_columns(list(MEMBERS_COLUMNS), scans.scan([key], MEMBERS_COLUMNS, partitions={}, root="")).subquery()


def empty(columns: dict[str, exp.DataType]) -> exp.Subquery:
    """A relation with ``columns`` and no rows (readers refuse an empty file list)."""
    return exp.select(*(
        exp.alias_(exp.cast(exp.null(), data.copy()), name, quoted=True) for name, data in columns.items()
    )).where(exp.false()).subquery()


def bind(query: exp.Select, relations: Relations) -> exp.Select:
    """``query`` with its placeholders replaced by ``relations`` (only those it names are built)."""
    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db == PLACEHOLDER_DB and node.name in (EVENTS_TABLE, PROFILES_TABLE):
            relation = getattr(relations, node.name).copy()
            alias = node.args.get("alias")
            if alias is not None:
                relation.set("alias", alias.copy())
            return relation
        return node

    return query.transform(swap)


def event_entries(snapshot: EventsSnapshot, event_dates: tuple[date | None, date] | None) -> tuple[FileEntry, ...]:
    """The entries a query within ``event_dates`` (first day or None, last day) reads: all
    entries unless a first day is given."""
    if event_dates is None or event_dates[0] is None:
        return snapshot.entries
    return snapshot.entries_between(*event_dates)


def iso_text(column: exp.Expression) -> exp.Expression:
    """A naive UTC timestamp as ``YYYY-MM-DDTHH:MM:SSZ`` in every dialect: one ``TimeToStr`` of
    ``%Y-%m-%dT%H:%M:%SZ`` would become a Java pattern on Spark, where T and Z mean other things."""
    def part(fmt: str) -> exp.Expression:
        return exp.TimeToStr(this=column.copy(), format=exp.Literal.string(fmt))

    return exp.Concat(expressions=[part("%Y-%m-%d"), exp.Literal.string("T"), part("%H:%M:%S"),
                                   exp.Literal.string("Z")])
