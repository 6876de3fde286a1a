"""What the compiler needs to know about the tables it queries, and what it expects of them.

The compiler never looks at storage: the caller describes the events and
profiles relations (a table name or a table-valued function such as
``read_parquet([...])`` as a sqlglot expression) and which column holds what.
The lake, a test table and a warehouse table are all just a ``LakeSchema``.

What a warehouse's tables must look like for each dialect's rendering
(``TABLES``; ``LakeSchema.table_columns`` and ``LakeSchema.folded`` apply it):

- Column names are used exactly as given, always quoted. Engines that fold
  unquoted names (``folds_unquoted``) stored a column created as ``user_id``
  under the folded name: Snowflake as ``USER_ID``, so a quoted ``"user_id"``
  does not find it. ``folded(dialect)`` names every column that way.
- Timestamps (``occurred_at``, timestamp properties and traits) hold UTC
  wall-clock values without a time zone, in the dialect's ``timestamp`` type,
  which is also the type of every timestamp literal: a column with a time zone
  (PostgreSQL ``timestamptz``, BigQuery ``TIMESTAMP``, Spark ``TIMESTAMP``)
  would be compared through the session's time zone, or not at all (BigQuery).
  ClickHouse has no zone-less type: any ``DateTime64(6[, zone])`` column holds
  instants, and the literals say ``'UTC'``.
- ``event_date`` (if set) is a DATE: the UTC date of ``occurred_at``.
- String columns order by code point: no column collation (Snowflake and
  BigQuery columns can carry one); where the default collation is not binary
  (PostgreSQL) the rendering says ``COLLATE "C"`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from sqlglot import exp

ValueKind = Literal["number", "string", "boolean", "timestamp"]


@dataclass(frozen=True)
class WarehouseTables:
    """What one dialect's rendering expects of the tables (see the module doc)."""

    timestamp: str  # type of timestamp columns and literals, in the dialect's own spelling
    folds_unquoted: Literal["lower", "upper"] | None = None  # how names created unquoted are stored


TABLES = {
    "duckdb": WarehouseTables("TIMESTAMP"),
    "postgres": WarehouseTables("TIMESTAMP", folds_unquoted="lower"),
    "spark": WarehouseTables("TIMESTAMP_NTZ"),
    "trino": WarehouseTables("TIMESTAMP(6)", folds_unquoted="lower"),
    "snowflake": WarehouseTables("TIMESTAMP_NTZ", folds_unquoted="upper"),
    "bigquery": WarehouseTables("DATETIME"),
    "clickhouse": WarehouseTables("DateTime64(6, 'UTC')"),
}
_COLUMN_TYPES = {"number": "DOUBLE", "string": "TEXT", "boolean": "BOOLEAN", "date": "DATE", "tenant": "BIGINT"}


def timestamp_type(dialect: str) -> exp.DataType:
    """The dialect's timestamp type (of literals and of the columns they meet)."""
    return exp.DataType.build(TABLES[dialect].timestamp, dialect=dialect)


@dataclass(frozen=True)
class TypedColumn:
    """A property or trait stored in its own typed column."""

    column: str  # physical column name, quoted by the compiler
    kind: ValueKind


@dataclass(frozen=True)
class EventsRelation:
    relation: exp.Expression  # e.g. exp.to_table("events") or a read_parquet(...) call
    tenant_id: str = "tenant_id"
    user_id: str = "user_id"
    event_type: str = "event_type"
    occurred_at: str = "occurred_at"
    # Hive partition column holding the UTC date of occurred_at; lets engines prune files.
    event_date: str | None = "event_date"
    # property name -> typed column
    properties: dict[str, TypedColumn] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfilesRelation:
    """One row per (tenant, user) with the latest value of every trait."""

    relation: exp.Expression
    tenant_id: str = "tenant_id"
    user_id: str = "user_id"
    # trait name -> typed column
    traits: dict[str, TypedColumn] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeSchema:
    events: EventsRelation
    profiles: ProfilesRelation

    def table_columns(self, dialect: str) -> dict[str, dict[str, str]]:
        """``{"events": {column: type}, "profiles": {...}}``: every column the compiler may read, typed as
        ``dialect``'s rendering expects (a table created with exactly these columns answers correctly).
        ``tenant_id`` is BIGINT like the lake's; a table of string tenant ids needs a text column."""

        def sql_type(kind: str) -> str:
            built = timestamp_type(dialect) if kind == "timestamp" else exp.DataType.build(_COLUMN_TYPES[kind])
            built.set("nullable", True)  # ClickHouse: missing values are NULLs, not defaults
            return built.sql(dialect)

        def typed(columns: dict[str, TypedColumn]) -> dict[str, str]:
            return {c.column: sql_type(c.kind) for c in columns.values()}

        events, profiles = self.events, self.profiles
        event_columns = {events.tenant_id: sql_type("tenant"), events.user_id: sql_type("string"),
                         events.event_type: sql_type("string"), events.occurred_at: sql_type("timestamp")}
        if events.event_date is not None:
            event_columns[events.event_date] = sql_type("date")
        return {
            "events": {**event_columns, **typed(events.properties)},
            "profiles": {profiles.tenant_id: sql_type("tenant"), profiles.user_id: sql_type("string"),
                         **typed(profiles.traits)},
        }

    def folded(self, dialect: str) -> LakeSchema:
        """This schema for tables created with these column names unquoted, in an engine that stores such
        names folded (Snowflake: upper case); unchanged where the engine does not fold."""
        case = TABLES[dialect].folds_unquoted
        if case is None:
            return self
        fold = str.upper if case == "upper" else str.lower

        def typed(columns: dict[str, TypedColumn]) -> dict[str, TypedColumn]:
            return {name: replace(c, column=fold(c.column)) for name, c in columns.items()}

        events, profiles = self.events, self.profiles
        return LakeSchema(
            replace(events, tenant_id=fold(events.tenant_id), user_id=fold(events.user_id),
                    event_type=fold(events.event_type), occurred_at=fold(events.occurred_at),
                    event_date=None if events.event_date is None else fold(events.event_date),
                    properties=typed(events.properties)),
            replace(profiles, tenant_id=fold(profiles.tenant_id), user_id=fold(profiles.user_id),
                    traits=typed(profiles.traits)),
        )
