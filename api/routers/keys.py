"""API keys of the caller's tenant: list, mint (the plaintext is shown once), read, revoke."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from api.deps import Principal, check_body_tenant, get_runtime, require, tenant_scoped_404, valid_id
from api.errors import ApiError
from api.pagination import OffsetPage, offset_params, offset_response
from engine.accounts import validate_scopes
from engine.runtime import Runtime

router = APIRouter(prefix="/api/keys", tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str]
    allow_sends: bool = Field(False, validation_alias=AliasChoices("allow_sends", "allowSends"))
    tenant: int | str | None = None  # accepted only when it names the caller's tenant (api.deps)


@router.get("/")
async def list_keys(request: Request, page: OffsetPage = Depends(offset_params),
                    principal: Principal = Depends(require("keys:write")),
                    runtime: Runtime = Depends(get_runtime)) -> dict:
    count, keys = runtime.accounts.list_api_keys(principal.tenant_id, page.limit, page.offset)
    return offset_response(request, page, count, keys)


@router.post("/", status_code=201)
async def create_key(body: KeyCreate, principal: Principal = Depends(require("keys:write")),
                     runtime: Runtime = Depends(get_runtime)) -> dict:
    """A credential cannot mint a key stronger than itself: scopes must be a subset of its own and
    allow_sends needs its own allow_sends."""
    check_body_tenant(principal, body.tenant)
    scopes = validate_scopes(body.scopes)
    for i, scope in enumerate(body.scopes):
        if scope not in principal.scopes:
            raise ApiError(403, f"Cannot grant '{scope}': this credential lacks it.", "missing_scope",
                           {f"scopes[{i}]": [scope]})
    if body.allow_sends and not principal.allow_sends:
        raise ApiError(403, "Cannot grant allow_sends: this credential is not allowed to send.",
                       "sends_not_allowed", {"allow_sends": ["true"]})
    listing, key = runtime.accounts.create_api_key(principal.tenant_id, body.name, scopes, body.allow_sends)
    return {**listing, "key": key}


@router.get("/{key_id}/")
async def get_key(key_id: int, principal: Principal = Depends(require("keys:write")),
                  runtime: Runtime = Depends(get_runtime)) -> dict:
    listing = runtime.accounts.get_api_key(principal.tenant_id, key_id) if valid_id(key_id) else None
    if listing is None:
        raise tenant_scoped_404("API key", key_id)
    return listing


@router.delete("/{key_id}/", status_code=204)
async def revoke_key(key_id: int, principal: Principal = Depends(require("keys:write")),
                     runtime: Runtime = Depends(get_runtime)) -> Response:
    if not (valid_id(key_id) and runtime.accounts.revoke_api_key(principal.tenant_id, key_id)):
        raise tenant_scoped_404("API key", key_id)
    return Response(status_code=204)
