"""Emails: send one (``emails.send``) or a batch of independent ones (``emails.batchSend``) from a
saved template, then read each EmailSend's durable status.

Sending needs ``sends:write`` on a key with ``allowSends`` (403 ``sends_not_allowed`` otherwise);
reading needs ``sends:write`` or ``broadcasts:read``. Both POSTs accept ``Idempotency-Key``.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from api.deps import MAX_ID, Principal, check_id, get_runtime, require
from api.models.common import CamelModel
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import HeaderText, any_scope, errors, idempotent, json_response
from engine.runtime import Runtime
from engagement.emails import MAX_BATCH

router = APIRouter(prefix="/api/emails", tags=["emails"])
SEND = require("sends:write")
READ = any_scope("sends:write", "broadcasts:read")
STATUSES = Literal["queued", "handing_off", "sent", "failed", "skipped_unsubscribed", "suppressed", "cancelled",
                   "unknown"]


class EmailRequest(CamelModel):
    template_id: int = Field(ge=1, le=MAX_ID)
    to: HeaderText | None = Field(None, max_length=320)
    user_id: str | None = Field(None, min_length=1, max_length=256)
    data_variables: dict[str, Any] | None = None


class BatchRequest(CamelModel):
    emails: list[EmailRequest] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("/", status_code=201, responses=errors(409))
def send_email(body: EmailRequest, request: Request, principal: Principal = Depends(SEND),
               runtime: Runtime = Depends(get_runtime)):
    doc = body.doc()
    return idempotent(request, principal, runtime, doc, lambda: (
        201, runtime.sends.emails.send(principal.tenant_id, [doc], batch=False)[0]))


@router.post("/batch/", status_code=201, responses=errors(409))
def send_batch(body: BatchRequest, request: Request, principal: Principal = Depends(SEND),
               runtime: Runtime = Depends(get_runtime)):
    doc = body.doc()

    def run():
        results = runtime.sends.emails.send(principal.tenant_id, doc["emails"], batch=True)
        return 201, {"count": len(results), "results": results}

    return idempotent(request, principal, runtime, doc, run)


@router.get("/")
def list_emails(request: Request, page: OffsetPage = Depends(offset_params), status: STATUSES | None = None,
                source: Literal["api", "journey", "broadcast"] | None = None, principal: Principal = Depends(READ),
                runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.outbound.list(principal.tenant_id, status=status, source=source, source_id=None,
                                              limit=page.limit, offset=page.offset)
    return offset_response(request, page, count, rows)


@router.get("/{send_id:int}/")
def get_email(send_id: int, principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.outbound.get(principal.tenant_id, check_id("email", send_id)))
