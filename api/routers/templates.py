"""Email templates: list, read, create, update, duplicate, archive, unarchive, preview.

Saving refuses a template that exceeds the sandbox's limits whatever the data (400
``template_too_expensive`` naming the part); a preview that exceeds them answers 422 with that code.
Saving reports merge fields the template reads that are neither a known profile trait nor a
declared ``dataVariables`` name as ``unknownMergeFields`` (saved anyway). Creating POSTs
accept ``Idempotency-Key``.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from api.deps import MAX_ID, Principal, get_runtime, id_param, require
from api.models.common import CamelModel
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import HeaderText, errors, idempotent, json_response
from engine.runtime import Runtime
from engagement.recipients import normalize_address

router = APIRouter(prefix="/api/templates", tags=["templates"])
# html and text may each hold 1,000,000 characters: room for both as JSON, escapes included
_TEMPLATE_BODY_BYTES = 16 << 20
BODY_LIMITS = {"/api/templates/": _TEMPLATE_BODY_BYTES, "/api/templates/{template_id:int}/": _TEMPLATE_BODY_BYTES}
READ = require("templates:read")
WRITE = require("templates:write")


class TemplateFields(CamelModel):
    """Omit a field to keep it. Only ``brandKitId`` and the sender fields take null (use the brand kit's)."""

    name: str = Field(None, min_length=1, max_length=200)
    subject: HeaderText = Field(None, max_length=998)
    html: str = Field(None, max_length=1_000_000)
    text: str = Field(None, max_length=1_000_000)
    purpose: Literal["marketing", "transactional"] = None
    topic: str = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    data_variables: list[str] = Field(None, max_length=200)
    brand_kit_id: int | None = Field(None, ge=1, le=MAX_ID)
    from_name: HeaderText | None = Field(None, max_length=200)
    from_email: HeaderText | None = Field(None, max_length=320)
    reply_to: HeaderText | None = Field(None, max_length=320)


class TemplateCreate(TemplateFields):
    name: str = Field(min_length=1, max_length=200)
    subject: HeaderText = Field(max_length=998)


class DuplicateRequest(CamelModel):
    name: str = Field(None, min_length=1, max_length=200)


class PreviewRequest(CamelModel):
    user_id: str | None = None
    traits: dict[str, Any] | None = None
    data_variables: dict[str, Any] | None = None


template_id_param = id_param("template", "template_id")


def _checked(runtime: Runtime, tenant_id: int, doc: dict[str, Any]) -> dict[str, Any]:
    sends = runtime.sends
    sends.brand_kits.check_exists(tenant_id, doc.get("brandKitId"))
    for field in ("fromEmail", "replyTo"):
        if doc.get(field) is not None:
            doc[field] = normalize_address(doc[field], field)
    return doc


@router.get("/")
def list_templates(request: Request, page: OffsetPage = Depends(offset_params),
                   archived: bool | None = Query(None), purpose: Literal["marketing", "transactional"] | None = None,
                   principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.templates.list(principal.tenant_id, archived=archived, purpose=purpose,
                                               limit=page.limit, offset=page.offset)
    return offset_response(request, page, count, rows)


@router.post("/", status_code=201, responses=errors(409))
def create_template(body: TemplateCreate, request: Request, principal: Principal = Depends(WRITE),
                    runtime: Runtime = Depends(get_runtime)):
    doc = body.doc()
    return idempotent(request, principal, runtime, doc, lambda: (
        201, runtime.sends.templates.create(principal.tenant_id, _checked(runtime, principal.tenant_id, doc))))


@router.get("/{template_id:int}/")
def get_template(template_id: int = Depends(template_id_param), principal: Principal = Depends(READ),
                 runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.templates.get(principal.tenant_id, template_id))


@router.patch("/{template_id:int}/", responses=errors(409))
def update_template(body: TemplateFields, template_id: int = Depends(template_id_param),
                    principal: Principal = Depends(WRITE), runtime: Runtime = Depends(get_runtime)):
    changes = _checked(runtime, principal.tenant_id, body.doc())
    return json_response(runtime.sends.templates.update(principal.tenant_id, template_id, changes))


@router.post("/{template_id:int}/duplicate/", status_code=201, responses=errors(409))
def duplicate_template(request: Request, body: DuplicateRequest | None = None,
                       template_id: int = Depends(template_id_param), principal: Principal = Depends(WRITE),
                       runtime: Runtime = Depends(get_runtime)):
    doc = body.doc() if body else {}
    return idempotent(request, principal, runtime, doc, lambda: (
        201, runtime.sends.templates.duplicate(principal.tenant_id, template_id, doc.get("name"))))


@router.post("/{template_id:int}/archive/")
def archive_template(template_id: int = Depends(template_id_param), principal: Principal = Depends(WRITE),
                     runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.templates.set_archived(principal.tenant_id, template_id, True))


@router.post("/{template_id:int}/unarchive/")
def unarchive_template(template_id: int = Depends(template_id_param), principal: Principal = Depends(WRITE),
                       runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.templates.set_archived(principal.tenant_id, template_id, False))


@router.post("/{template_id:int}/preview/")
def preview_template(body: PreviewRequest, template_id: int = Depends(template_id_param),
                     principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    """Render for a profile (``userId``) or given ``traits``, with ``dataVariables``; nothing is sent."""
    return json_response(runtime.sends.preview_template(principal.tenant_id, template_id, body.user_id,
                                                        body.traits or {}, body.data_variables or {}))
