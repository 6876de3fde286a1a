"""Bulk export of a segment's members: start (202), poll, download.

``POST /api/segments/<id>/export/`` ``{"format": "parquet"|"csv"|"jsonl", "traits": [names]}``
pins the segment's current computation and queues the export (409 ``segment_not_computed``
before the first computation; 400 ``unknown_trait`` naming ``traits[i]``).
``?wait=SECONDS`` (at most 60) answers once it has finished (200) instead.
``GET /api/segments/<id>/export/?export_id=`` polls it. ``GET /api/segments/exports/<id>/download/``
streams the file, or redirects (302) to a presigned URL when the lake is on S3 (``curl -L``).
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Principal, check_id, get_runtime, require, tenant_scoped_404, valid_id
from api.errors import ApiError, ErrorEnvelope
from api.waiting import WAIT_RESPONSES, finished_or_current, wait_seconds
from engine.exports import CONTENT_TYPES, MAX_TRAITS
from engine.runtime import Runtime

router = APIRouter(prefix="/api/segments", tags=["exports"])
READ = require("exports:read")
PRESIGNED_SECONDS = 3600
_NOT_COMPUTED = {409: {"model": ErrorEnvelope, "description": "segment_not_computed"}}
_FILE = {200: {"description": "The file (when the lake is local)", "content": {
             media_type.split(";")[0]: {"schema": {"type": "string", "format": "binary"}}
             for media_type in CONTENT_TYPES.values()}},
         302: {"description": "Redirect to a presigned URL (when the lake is on S3)"},
         409: {"model": ErrorEnvelope, "description": "export_not_ready"}}


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["parquet", "csv", "jsonl"] = "parquet"
    traits: list[str] = Field(default_factory=list, max_length=MAX_TRAITS)


def _with_url(request: Request, export: dict) -> dict:
    url = None
    if export["status"] == "done":
        url = str(request.url_for("download_export", export_id=export["export_id"]))
    return {**export, "download_url": url}


@router.post("/{segment_id:int}/export/", status_code=202, responses={**_NOT_COMPUTED, **WAIT_RESPONSES})
async def start_export(request: Request, response: Response, segment_id: int, body: ExportRequest,
                       wait: float = Depends(wait_seconds), principal: Principal = Depends(READ),
                       runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue the export; with ``?wait=SECONDS``, answer once it has finished (200) or when the
    wait is over (202)."""
    export = await run_in_threadpool(runtime.exports.create, principal.tenant_id, check_id("segment", segment_id),
                                     body.format, body.traits)
    if wait:
        export = await finished_or_current(
            lambda: runtime.exports.get(principal.tenant_id, export["export_id"]), wait, response)
    return _with_url(request, export)


@router.get("/{segment_id:int}/export/")
def poll_export(request: Request, segment_id: int, export_id: int = Query(..., ge=1),
                principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    in_range = valid_id(segment_id) and valid_id(export_id)
    export = runtime.exports.get(principal.tenant_id, export_id, segment_id) if in_range else None
    if export is None:
        raise tenant_scoped_404("export", export_id)
    return _with_url(request, export)


@router.get("/exports/{export_id:int}/download/", name="download_export", responses=_FILE)
def download_export(export_id: int, principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    export = runtime.exports.get(principal.tenant_id, export_id) if valid_id(export_id) else None
    if export is None:
        raise tenant_scoped_404("export", export_id)
    found = runtime.exports.file(principal.tenant_id, export_id)
    if found is None:
        raise ApiError(409, f"Export {export_id} is {export['status']}, not done.", "export_not_ready")
    store = runtime.lake.store
    url = store.presigned_get(found.key, expires=PRESIGNED_SECONDS)
    if url is not None:
        return RedirectResponse(url, status_code=302)
    return FileResponse(store.duckdb_path(found.key), media_type=CONTENT_TYPES[found.format],
                        filename=found.filename)
