"""The tenant's catalog, for the console's autocomplete: event types with their counts, event properties
and profile traits with their kinds (number, string, boolean), as the lake knows them now.

Scope ``segments:read`` (what building a segment needs). The query is the engine's
(``SegmentQueries.catalog``): nothing of the request reaches it.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import Principal, get_runtime, require
from engine.runtime import Runtime

router = APIRouter(prefix="/api/catalog", tags=["catalog"])
READ = require("segments:read")


@router.get("/")
def catalog(principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    """``{event_types: [{event_type, count}] (most frequent first, at most 1000), properties: [{name, kind}],
    traits: [{name, kind}]}`` (by name)."""
    return runtime.queries.catalog(principal.tenant_id)
