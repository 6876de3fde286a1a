"""What the compiler needs to know about the tables it queries.

The compiler never looks at storage: the caller describes the events and
profiles relations (a table name or a table-valued function such as
``read_parquet([...])`` as a sqlglot expression) and which column holds what.
The lake, a test table and a warehouse table are all just a ``LakeSchema``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlglot import exp

ValueKind = Literal["number", "string", "boolean", "timestamp"]


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
