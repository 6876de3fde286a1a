"""The tenant's catalog, for the console's autocomplete: event types with their counts, event properties
and profile traits with their kinds (number, string, boolean), as the lake knows them now.

Scope ``segments:read`` (what building a segment needs). The counts scan one column of the tenant's
current snapshot; the query is built from sqlglot nodes, nothing of the request is parsed.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlglot import exp

from api.deps import Principal, get_runtime, require
from engine.runtime import Runtime
from engine.segment_query import TenantLake, tenant_lake

router = APIRouter(tags=["catalog"])
READ = require("segments:read")
MAX_EVENT_TYPES = 1000


def _event_type_counts(runtime: Runtime, lake: TenantLake) -> list[dict]:
    if not lake.events.files:
        return []
    events = runtime.segment_queries.relations(lake)["events"]
    event_type = exp.column("event_type")
    sql = (exp.select(event_type, exp.alias_(exp.Count(this=exp.Star()), "n")).from_(events)
           .group_by(event_type.copy()).order_by(exp.Ordered(this=exp.column("n"), desc=True), event_type.copy())
           .limit(MAX_EVENT_TYPES).sql(dialect="duckdb"))
    cursor = runtime.segment_queries.cursor()
    try:
        rows = cursor.execute(sql).fetchall()
    finally:
        cursor.close()
    return [{"event_type": name, "count": count} for name, count in rows]


@router.get("/api/catalog/")
def catalog(principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    """``{event_types: [{event_type, count}] (most frequent first, at most 1000), properties: [{name, kind}],
    traits: [{name, kind}]}`` (by name)."""
    lake = tenant_lake(runtime, principal.tenant_id)

    def kinds(columns: dict) -> list[dict]:
        return [{"name": name, "kind": typed.kind} for name, typed in sorted(columns.items())]

    return {"event_types": _event_type_counts(runtime, lake),
            "properties": kinds(lake.schema.events.properties), "traits": kinds(lake.schema.profiles.traits)}
