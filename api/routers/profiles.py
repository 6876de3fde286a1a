"""User profiles: search (offset pagination) and one user's traits, recent events and segments.

Search (``?search=``) matches a user id prefix or, case-insensitively, the prefix of any string
trait (e.g. an email). Scope ``profiles:read``; another tenant's user answers 404.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from api.deps import Principal, get_runtime, require, tenant_scoped_404
from api.pagination import OffsetPage, offset_params, offset_response
from engine.runtime import Runtime

router = APIRouter(prefix="/api/profiles", tags=["profiles"])
READ = require("profiles:read")


@router.get("/")
def list_profiles(request: Request, search: str | None = Query(None, max_length=512),
                  page: OffsetPage = Depends(offset_params), principal: Principal = Depends(READ),
                  runtime: Runtime = Depends(get_runtime)) -> dict:
    count, results = runtime.profiles.search(principal.tenant_id, search, page.limit, page.offset)
    return offset_response(request, page, count, results)


@router.get("/{user_id}/")
def profile(user_id: str, principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    found = runtime.profiles.get(principal.tenant_id, user_id)
    if found is None:
        raise tenant_scoped_404("profile", user_id)
    return found
