"""Brand kits: logos, colors and sender defaults (list, read, create, update, delete)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from api.deps import MAX_ID, Principal, get_runtime, id_param, require
from api.models.common import CamelModel
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import HeaderText, errors, idempotent, json_response
from engine.runtime import Runtime
from engagement.recipients import normalize_address

router = APIRouter(prefix="/api/brand-kits", tags=["brand kits"])
READ = require("brand_kits:read")
WRITE = require("brand_kits:write")


class Sender(CamelModel):
    from_name: HeaderText | None = Field(None, max_length=200)
    from_email: HeaderText | None = Field(None, max_length=320)
    reply_to: HeaderText | None = Field(None, max_length=320)


class BrandKitFields(CamelModel):
    """Omit a field to keep it; only ``logoAssetId`` takes null (no logo)."""

    name: str = Field(None, min_length=1, max_length=200)
    is_default: bool = None
    logo_asset_id: int | None = Field(None, ge=1, le=MAX_ID)
    colors: dict[str, str] = None
    fonts: dict[str, str] = None
    sender: Sender = None
    footer_html: str = Field(None, max_length=100_000)


class BrandKitCreate(BrandKitFields):
    name: str = Field(min_length=1, max_length=200)


kit_id_param = id_param("brand kit", "kit_id")


def _doc(body: BrandKitFields) -> dict:
    doc = body.doc()
    sender = doc.get("sender")
    if sender:
        for field in ("fromEmail", "replyTo"):
            if sender.get(field) is not None:
                sender[field] = normalize_address(sender[field], f"sender.{field}")
    return doc


@router.get("/")
def list_brand_kits(request: Request, page: OffsetPage = Depends(offset_params), principal: Principal = Depends(READ),
                    runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.brand_kits.list(principal.tenant_id, page.limit, page.offset)
    return offset_response(request, page, count, rows)


@router.post("/", status_code=201, responses=errors(409))
def create_brand_kit(body: BrandKitCreate, request: Request, principal: Principal = Depends(WRITE),
                     runtime: Runtime = Depends(get_runtime)):
    doc = _doc(body)
    return idempotent(request, principal, runtime, doc,
                      lambda: (201, runtime.sends.brand_kits.create(principal.tenant_id, doc)))


@router.get("/{kit_id:int}/")
def get_brand_kit(kit_id: int = Depends(kit_id_param), principal: Principal = Depends(READ),
                  runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.brand_kits.get(principal.tenant_id, kit_id))


@router.patch("/{kit_id:int}/")
def update_brand_kit(body: BrandKitFields, kit_id: int = Depends(kit_id_param), principal: Principal = Depends(WRITE),
                     runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.brand_kits.update(principal.tenant_id, kit_id, _doc(body)))


@router.delete("/{kit_id:int}/", status_code=204)
def delete_brand_kit(kit_id: int = Depends(kit_id_param), principal: Principal = Depends(WRITE),
                     runtime: Runtime = Depends(get_runtime)):
    runtime.sends.brand_kits.delete(principal.tenant_id, kit_id)
    return Response(status_code=204)
