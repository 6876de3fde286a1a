"""Recipients: one-click unsubscribe (RFC 8058), bounce/complaint reports, subscription status,
and the open pixel / click redirect that go into emails.

The unsubscribe, open and click routes carry no credential: each carries a signed token minted
when the email was rendered (engagement/recipients.py). ``GET`` on an unsubscribe link only
shows a confirmation form (link scanners prefetch GETs); the ``POST`` that mail clients send
for ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` unsubscribes at once.
"""
from __future__ import annotations

import base64
from html import escape
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import Field
from starlette.responses import Response

from api.deps import Principal, get_runtime, require
from api.errors import ApiError
from api.models.common import CamelModel
from api.routers._sends_common import errors, idempotent, json_response
from engine.runtime import Runtime
from engagement.common import SendsError
from engagement.recipients import normalize_address, valid_address

router = APIRouter(prefix="/api/recipients", tags=["recipients"])
READ = require("profiles:read")
WRITE = require("profiles:write")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0"}
HTML = {200: {"content": {"text/html": {}}, "description": "A page for the recipient"}}


class Feedback(CamelModel):
    type: Literal["hard_bounce", "soft_bounce", "complaint"]
    email: str | None = Field(None, max_length=320)
    message_id: str | None = Field(None, max_length=998)
    detail: str = Field("", max_length=2000)


class SubscriptionChange(CamelModel):
    email: str | None = Field(None, max_length=320)
    user_id: str | None = Field(None, max_length=256)
    topic: str = Field("marketing", max_length=64)
    status: Literal["subscribed", "unsubscribed"]


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
                        f"<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">{body}</body></html>",
                        headers=NO_STORE)


def _address(runtime: Runtime, tenant_id: int, email: str | None, user_id: str | None) -> str:
    if email is not None:
        return normalize_address(email)
    if user_id is None:
        raise SendsError("email", "give email or userId", "recipient_required")
    address = valid_address((runtime.sends.profiles.one(tenant_id, user_id) or {}).get("email"))
    if address is None:
        raise ApiError.field("userId", f"profile {user_id!r} has no valid email trait", "no_email_address", status=422)
    return address


@router.get("/unsubscribe/{token}/", responses=HTML)
def unsubscribe_page(token: str, runtime: Runtime = Depends(get_runtime)):
    _, address, topic, _ = runtime.sends.engagement.unsubscribe_target(token)
    return _page("Unsubscribe", f"<p>Unsubscribe <b>{escape(address)}</b> from <b>{escape(topic)}</b> email?</p>"
                                f"<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" "
                                f"value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>")


@router.post("/unsubscribe/{token}/", responses=HTML)
def unsubscribe(token: str, runtime: Runtime = Depends(get_runtime)):
    """RFC 8058 one-click: no login, effective immediately."""
    done = runtime.sends.engagement.unsubscribe(token, "one_click")
    return _page("Unsubscribed", f"<p><b>{escape(done['email'])}</b> will get no more {escape(done['topic'])} "
                                 f"email from us.</p>")


@router.get("/open/{token}.gif", responses={
    200: {"content": {"image/gif": {}}, "description": "A 1x1 transparent GIF (the open is counted)"}})
def open_pixel(token: str, runtime: Runtime = Depends(get_runtime)):
    runtime.sends.engagement.opened(token)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/click/{token}/", status_code=302, responses={
    302: {"description": "Redirect to the link's target (the click is counted)"}})
def click(token: str, runtime: Runtime = Depends(get_runtime)):
    return RedirectResponse(runtime.sends.engagement.clicked(token), status_code=302, headers=NO_STORE)


@router.post("/feedback/", status_code=202, responses=errors(409))
def feedback(body: Feedback, request: Request, principal: Principal = Depends(WRITE),
             runtime: Runtime = Depends(get_runtime)):
    """A bounce or complaint report (e.g. from the mail provider's webhook). Hard bounces and
    complaints suppress the address at once; name it by ``email`` or by the ``messageId`` we sent.
    Accepts ``Idempotency-Key`` (webhooks retry)."""
    sends = runtime.sends

    def record():
        address = normalize_address(body.email) if body.email is not None else None
        if address is None:
            row = sends.outbound.by_message_id((body.message_id or "").strip("<>"))
            if row is None or row["tenant_id"] != principal.tenant_id or not row["to_address"]:
                raise SendsError("messageId", "give email, or the messageId of an email we sent", "recipient_required")
            address = row["to_address"]
        suppressed = sends.recipients.record_feedback(principal.tenant_id, address, body.type, body.message_id,
                                                      body.detail)
        return 202, {"email": address, "type": body.type, "suppressed": suppressed}

    return idempotent(request, principal, runtime, body.doc(), record)


@router.get("/subscription/")
def subscription(email: str | None = Query(None, max_length=320), user_id: str | None = Query(None, alias="userId"),
                 principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    address = _address(runtime, principal.tenant_id, email, user_id)
    return json_response(runtime.sends.recipients.status(principal.tenant_id, address))


@router.put("/subscription/")
def change_subscription(body: SubscriptionChange, principal: Principal = Depends(WRITE),
                        runtime: Runtime = Depends(get_runtime)):
    address = _address(runtime, principal.tenant_id, body.email, body.user_id)
    runtime.sends.recipients.set_subscription(principal.tenant_id, address, body.topic, body.status, "api")
    return json_response(runtime.sends.recipients.status(principal.tenant_id, address))


@router.delete("/suppressions/")
def unsuppress(email: str = Query(max_length=320), principal: Principal = Depends(WRITE),
               runtime: Runtime = Depends(get_runtime)):
    address = normalize_address(email)
    if not runtime.sends.recipients.unsuppress(principal.tenant_id, address):
        raise ApiError.field("email", "this address is not suppressed", "not_suppressed", status=404)
    return json_response(runtime.sends.recipients.status(principal.tenant_id, address))
