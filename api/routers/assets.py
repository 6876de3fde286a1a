"""Image assets: upload session (presigned S3 PUT, or a local upload URL on the embedded store),
finalize, list, read, update metadata, delete; plus the public file route email clients load.

``PUT /api/assets/uploads/<token>/`` and ``GET /api/assets/files/<token>/<name>`` carry no
credential: the unguessable token in the path is the capability, as in a presigned URL.
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from api.deps import Principal, get_runtime, id_param, require
from api.models.common import CamelModel
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import errors, idempotent, json_response
from engine.errors import TooLarge
from engine.runtime import Runtime
from engagement.assets import CONTENT_TYPES, MAX_BYTES

router = APIRouter(prefix="/api/assets", tags=["assets"])
READ = require("assets:read")
WRITE = require("assets:write")


class UploadRequest(CamelModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(max_length=100)
    size: int = Field(gt=0, le=MAX_BYTES)
    name: str = Field(None, min_length=1, max_length=200)
    alt_text: str = Field("", max_length=1000)


class ExternalAsset(CamelModel):
    url: str = Field(max_length=2048)
    name: str = Field(min_length=1, max_length=200)
    content_type: str = Field(max_length=100)
    alt_text: str = Field("", max_length=1000)


class AssetUpdate(CamelModel):
    name: str = Field(None, min_length=1, max_length=200)
    alt_text: str = Field(None, max_length=1000)


asset_id_param = id_param("asset", "asset_id")


@router.get("/")
def list_assets(request: Request, page: OffsetPage = Depends(offset_params),
                status: Literal["pending", "ready"] | None = None, principal: Principal = Depends(READ),
                runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.assets.list(principal.tenant_id, status, page.limit, page.offset)
    return offset_response(request, page, count, rows)


@router.post("/", status_code=201, responses=errors(409))
def create_asset(body: ExternalAsset, request: Request, principal: Principal = Depends(WRITE),
                 runtime: Runtime = Depends(get_runtime)):
    """An asset record for an image hosted elsewhere (no upload)."""
    doc = body.doc()
    return idempotent(request, principal, runtime, doc, lambda: (201, runtime.sends.assets.create_external(
        principal.tenant_id, url=body.url, name=body.name, content_type=body.content_type, alt_text=body.alt_text)))


@router.post("/uploads/", status_code=201, responses=errors(409))
def start_upload(body: UploadRequest, request: Request, principal: Principal = Depends(WRITE),
                 runtime: Runtime = Depends(get_runtime)):
    """A pending asset and where to PUT its bytes (``upload.url``, ``upload.headers``) before ``expiresAt``."""
    doc = body.doc()
    return idempotent(request, principal, runtime, doc, lambda: (201, runtime.sends.assets.start_upload(
        principal.tenant_id, filename=body.filename, content_type=body.content_type, size=body.size,
        name=body.name, alt_text=body.alt_text)))


# The upload reads its body under MAX_BYTES itself (0: api.observe applies no cap of its own).
BODY_LIMITS = {"/api/assets/uploads/{token}/": 0}


@router.put("/uploads/{token}/", status_code=204, responses=errors(413, 415))
async def receive_upload(token: str, request: Request, runtime: Runtime = Depends(get_runtime)):
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise TooLarge(f"larger than {MAX_BYTES} bytes", code="payload_too_large", field="body")
        chunks.append(chunk)
    await run_in_threadpool(runtime.sends.assets.receive_upload, token, request.headers.get("content-type"),
                            b"".join(chunks))
    return Response(status_code=204)


@router.post("/{asset_id:int}/finalize/", responses=errors(409))
def finalize_asset(asset_id: int = Depends(asset_id_param), principal: Principal = Depends(WRITE),
                   runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.assets.finalize(principal.tenant_id, asset_id))


@router.get("/{asset_id:int}/")
def get_asset(asset_id: int = Depends(asset_id_param), principal: Principal = Depends(READ),
              runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.assets.get(principal.tenant_id, asset_id))


@router.patch("/{asset_id:int}/")
def update_asset(body: AssetUpdate, asset_id: int = Depends(asset_id_param), principal: Principal = Depends(WRITE),
                 runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.assets.update(principal.tenant_id, asset_id, body.doc()))


@router.delete("/{asset_id:int}/", status_code=204)
def delete_asset(asset_id: int = Depends(asset_id_param), principal: Principal = Depends(WRITE),
                 runtime: Runtime = Depends(get_runtime)):
    runtime.sends.assets.delete(principal.tenant_id, asset_id)
    return Response(status_code=204)


@router.get("/files/{public_token}/{filename}", response_class=Response, responses={
    200: {"content": {t: {} for t in CONTENT_TYPES}, "description": "The image"}})
def asset_file(public_token: str, filename: str, runtime: Runtime = Depends(get_runtime)):
    store = runtime.sends.assets.store
    key, content_type = runtime.sends.assets.public_file(public_token)
    stream = store.open(key)

    def chunks():
        try:
            while block := stream.read(64 << 10):
                yield block
        finally:
            stream.close()

    return StreamingResponse(chunks(), media_type=content_type,
                             headers={"Cache-Control": "public, max-age=31536000, immutable",
                                      "X-Content-Type-Options": "nosniff"})
