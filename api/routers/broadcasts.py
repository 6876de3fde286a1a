"""Broadcasts: prepare (dry run with frozen audience and template, valid 15 minutes), redeem
(``send-prepared``), cancel, progress; plus the legacy one-shot create+send.

Preparing needs ``broadcasts:write``; redeeming and the one-shot send also need ``sends:write``
on a key with ``allowSends`` (an agent key can prepare but not fire: 403 ``sends_not_allowed``).
An expired prepared send answers 410. Every POST accepts ``Idempotency-Key``.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, model_validator

from api.deps import MAX_ID, Principal, check_id, get_runtime, id_param, require
from api.models.common import CamelModel
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import errors, idempotent, json_response
from engine.runtime import Runtime

router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"])
READ = require("broadcasts:read")
WRITE = require("broadcasts:write")
SEND = require("broadcasts:write", "sends:write")


class Audience(CamelModel):
    segment_id: int | None = Field(None, ge=1, le=MAX_ID)
    definition: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.segment_id is None) == (self.definition is None):
            raise ValueError("give exactly one of segmentId or definition")
        return self


class PrepareRequest(CamelModel):
    template_id: int = Field(ge=1, le=MAX_ID)
    audience: Audience
    name: str | None = Field(None, min_length=1, max_length=200)


class RedeemRequest(CamelModel):
    prepared_send_id: int = Field(ge=1, le=MAX_ID)


broadcast_id_param = id_param("broadcast", "broadcast_id")


def _prepare(runtime: Runtime, tenant_id: int, body: PrepareRequest) -> dict:
    return runtime.sends.broadcasts.prepare(tenant_id, template_id=body.template_id,
                                            audience=body.audience.doc(), name=body.name)


@router.post("/prepare/", status_code=201, responses=errors(409))
def prepare(body: PrepareRequest, request: Request, principal: Principal = Depends(WRITE),
            runtime: Runtime = Depends(get_runtime)):
    """A dry run: audience size and sample now, ``expiresAt`` 15 minutes later. Nothing is sent."""
    return idempotent(request, principal, runtime, body.doc(),
                      lambda: (201, _prepare(runtime, principal.tenant_id, body)))


@router.post("/send-prepared/", status_code=202, responses=errors(409, 410))
def send_prepared(body: RedeemRequest, request: Request, principal: Principal = Depends(SEND),
                  runtime: Runtime = Depends(get_runtime)):
    return idempotent(request, principal, runtime, body.doc(), lambda: (
        202, runtime.sends.broadcasts.redeem(principal.tenant_id, check_id("prepared send", body.prepared_send_id))))


@router.post("/", status_code=202, responses=errors(409))
def create_and_send(body: PrepareRequest, request: Request, principal: Principal = Depends(SEND),
                    runtime: Runtime = Depends(get_runtime)):
    """Legacy one-shot: prepare and redeem in one call."""
    def run():
        prepared = _prepare(runtime, principal.tenant_id, body)
        return 202, runtime.sends.broadcasts.redeem(principal.tenant_id, prepared["id"])

    return idempotent(request, principal, runtime, body.doc(), run)


@router.post("/{broadcast_id:int}/cancel/", responses=errors(409))
def cancel(request: Request, broadcast_id: int = Depends(broadcast_id_param), principal: Principal = Depends(WRITE),
           runtime: Runtime = Depends(get_runtime)):
    """Stops every send not handed off yet; what went out stays counted."""
    return idempotent(request, principal, runtime, {}, lambda: (
        200, runtime.sends.broadcasts.cancel(principal.tenant_id, broadcast_id)))


@router.get("/")
def list_broadcasts(request: Request, page: OffsetPage = Depends(offset_params), principal: Principal = Depends(READ),
                    runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.broadcasts.list(principal.tenant_id, page.limit, page.offset)
    return offset_response(request, page, count, rows)


@router.get("/{broadcast_id:int}/")
def get_broadcast(broadcast_id: int = Depends(broadcast_id_param), principal: Principal = Depends(READ),
                  runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.broadcasts.get(principal.tenant_id, broadcast_id))
