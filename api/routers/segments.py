"""Segments: CRUD, version history, preview, JSON Schema of definitions, compute jobs.

Handlers are plain ``def``: FastAPI runs them in its threadpool, so DuckDB queries and
SQLite writes never block the event loop (compute is ``async``: its ``?wait`` holds no thread).
Ids are ``{...:int}`` path converters, so the fixed paths (``preview/``, ``schema/``,
``jobs/``) never collide with a segment id.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Principal, check_body_tenant, check_id, get_runtime, id_param, require, tenant_scoped_404
from api.errors import ApiError, ErrorEnvelope
from api.pagination import OffsetPage, offset_params, offset_response
from api.waiting import WAIT_RESPONSES, finished_or_current, wait_seconds
from compiler import DIALECTS, definition_json_schema
from engine.segments import query as segment_query
from engine.runtime import Runtime
from engine.segments.store import (
    BUILT_SEGMENT_TYPES,
    DEFAULT_COMPUTE_INTERVAL_MINUTES,
    MAX_COMPUTE_INTERVAL_MINUTES,
    Author,
    SegmentStore,
)

router = APIRouter(prefix="/api/segments", tags=["segments"])
READ = require("segments:read")
WRITE = require("segments:write")

class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    segment_type: Literal["rule", "ai", "lookalike"] = "rule"
    description: str = Field("", max_length=5000)
    definition: Any = None
    compute_interval_minutes: int = Field(DEFAULT_COMPUTE_INTERVAL_MINUTES, ge=1, le=MAX_COMPUTE_INTERVAL_MINUTES)
    tenant: int | str | None = None  # accepted only when it names the caller's tenant (api.deps)


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    definition: Any = None
    compute_interval_minutes: int | None = Field(None, ge=1, le=MAX_COMPUTE_INTERVAL_MINUTES)
    tenant: int | str | None = None


# Read by the engine like a definition's timestamps (400 invalid_timestamp at ``as_of``).
AS_OF = Field(None, json_schema_extra={"format": "date-time"},
              description="ISO 8601 (UTC if no offset) or a date; within years 1-9999 in UTC. Default: now.")
DIALECT = Field("duckdb", description="The dialect of the answer's `sql` (the count does not depend on it).")
Dialect = Literal[DIALECTS]


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    definition: Any = Field()
    limit: int = Field(10, ge=0, le=segment_query.MAX_PREVIEW_LIMIT)
    as_of: str | None = AS_OF
    dialect: Dialect = DIALECT


class StoredPreviewRequest(BaseModel):
    """Preview of a stored version: the definition comes from the version."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(10, ge=0, le=segment_query.MAX_PREVIEW_LIMIT)
    as_of: str | None = AS_OF
    dialect: Dialect = DIALECT


segment_id_param = id_param("segment", "segment_id")


def _author(principal: Principal) -> Author:
    return Author(principal.user_id, principal.api_key_id)


def _store(runtime: Runtime) -> SegmentStore:
    return runtime.segments


def _get_or_404(runtime: Runtime, tenant_id: int, segment_id: int) -> dict:
    segment = _store(runtime).get(tenant_id, segment_id)
    if segment is None:
        raise tenant_scoped_404("segment", segment_id)
    return segment


def _preview(runtime: Runtime, tenant_id: int, definition: Any, body: PreviewRequest | StoredPreviewRequest) -> dict:
    found = runtime.queries.preview(tenant_id, definition, limit=body.limit, as_of=body.as_of)
    return found.to_json(dialect=body.dialect)


# -- fixed paths --------------------------------------------------------------------------
@router.get("/schema/")
def definition_schema(principal: Principal = Depends(READ)) -> dict:
    """JSON Schema (2020-12) of segment definitions."""
    return definition_json_schema()


@router.post("/preview/")
def preview(body: PreviewRequest, principal: Principal = Depends(READ),
            runtime: Runtime = Depends(get_runtime)) -> dict:
    """Matched user count, the first ``limit`` matching user ids (ascending) and the SQL."""
    return _preview(runtime, principal.tenant_id, body.definition, body)


@router.get("/jobs/{job_id:int}/")
def get_job(job_id: int, principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    job = runtime.compute.get_job(principal.tenant_id, check_id("job", job_id))
    if job is None:
        raise tenant_scoped_404("job", job_id)
    return job


# -- collection ---------------------------------------------------------------------------
@router.get("/")
def list_segments(request: Request, page: OffsetPage = Depends(offset_params), principal: Principal = Depends(READ),
                  runtime: Runtime = Depends(get_runtime)) -> dict:
    count, segments = _store(runtime).list(principal.tenant_id, page.limit, page.offset)
    return offset_response(request, page, count, segments)


@router.post("/", status_code=201)
def create_segment(body: SegmentCreate, principal: Principal = Depends(WRITE),
                   runtime: Runtime = Depends(get_runtime)) -> dict:
    check_body_tenant(principal, body.tenant)
    if body.segment_type not in BUILT_SEGMENT_TYPES:
        raise ApiError.field("segment_type", f"'{body.segment_type}' segments are not available yet; use 'rule'",
                             "segment_type_not_available")
    definition = None
    if body.definition is not None:
        definition = runtime.queries.validate(principal.tenant_id, body.definition)
    return _store(runtime).create(
        principal.tenant_id, name=body.name, segment_type=body.segment_type, description=body.description,
        definition=definition, author=_author(principal), compute_interval_minutes=body.compute_interval_minutes)


# -- one segment --------------------------------------------------------------------------
@router.get("/{segment_id:int}/")
def get_segment(segment_id: int = Depends(segment_id_param), principal: Principal = Depends(READ),
                runtime: Runtime = Depends(get_runtime)) -> dict:
    return _get_or_404(runtime, principal.tenant_id, segment_id)


@router.patch("/{segment_id:int}/")
def update_segment(body: SegmentUpdate, segment_id: int = Depends(segment_id_param),
                   principal: Principal = Depends(WRITE), runtime: Runtime = Depends(get_runtime)) -> dict:
    """Metadata and/or definition; a changed definition becomes a new version."""
    check_body_tenant(principal, body.tenant)
    store = _store(runtime)
    if not store.exists(principal.tenant_id, segment_id):
        raise tenant_scoped_404("segment", segment_id)
    given = body.model_fields_set
    for field in ("name", "description", "compute_interval_minutes", "definition"):
        if field in given and getattr(body, field) is None:
            raise ApiError.field(field, "must not be null", "null_not_allowed")
    definition = None
    if "definition" in given:
        definition = runtime.queries.validate(principal.tenant_id, body.definition, segment_id=segment_id)
    fields = {name: getattr(body, name) for name in ("name", "description", "compute_interval_minutes")
              if name in given}
    return store.update(principal.tenant_id, segment_id, author=_author(principal), definition=definition, **fields)


@router.delete("/{segment_id:int}/", status_code=204,
               responses={409: {"model": ErrorEnvelope, "description": "segment_in_use: referenced by other segments"}})
def delete_segment(segment_id: int = Depends(segment_id_param), principal: Principal = Depends(WRITE),
                   runtime: Runtime = Depends(get_runtime)) -> Response:
    _store(runtime).delete(principal.tenant_id, segment_id)
    return Response(status_code=204)


@router.post("/{segment_id:int}/preview/")
def preview_segment(body: StoredPreviewRequest | None = Body(None), segment_id: int = Depends(segment_id_param),
                    principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    """Preview of the segment's current definition."""
    body = body or StoredPreviewRequest()
    segment = _get_or_404(runtime, principal.tenant_id, segment_id)
    if segment["definition"] is None:
        raise ApiError.field("definition", "the segment has no definition yet", "segment_has_no_definition")
    return {"version": segment["version"],
            **_preview(runtime, principal.tenant_id, segment["definition"], body)}


# -- versions -----------------------------------------------------------------------------
@router.get("/{segment_id:int}/versions/")
def list_versions(request: Request, segment_id: int = Depends(segment_id_param),
                  page: OffsetPage = Depends(offset_params), principal: Principal = Depends(READ),
                  runtime: Runtime = Depends(get_runtime)) -> dict:
    """Newest first."""
    count, versions = _store(runtime).versions(principal.tenant_id, segment_id, page.limit, page.offset)
    return offset_response(request, page, count, versions)


def _version_or_404(runtime: Runtime, tenant_id: int, segment_id: int, version: int) -> dict:
    found = _store(runtime).version(tenant_id, segment_id, check_id("version", version))
    if found is None:
        raise tenant_scoped_404("version", version)
    return found


@router.get("/{segment_id:int}/versions/{version:int}/")
def get_version(version: int, segment_id: int = Depends(segment_id_param), principal: Principal = Depends(READ),
                runtime: Runtime = Depends(get_runtime)) -> dict:
    return _version_or_404(runtime, principal.tenant_id, segment_id, version)


@router.post("/{segment_id:int}/versions/{version:int}/preview/")
def preview_version(version: int, body: StoredPreviewRequest | None = Body(None),
                    segment_id: int = Depends(segment_id_param), principal: Principal = Depends(READ),
                    runtime: Runtime = Depends(get_runtime)) -> dict:
    """Preview of any stored version (segment references resolve to current definitions)."""
    body = body or StoredPreviewRequest()
    stored = _version_or_404(runtime, principal.tenant_id, segment_id, version)
    return {"version": stored["version"],
            **_preview(runtime, principal.tenant_id, stored["definition"], body)}


# -- compute jobs -------------------------------------------------------------------------
@router.post("/{segment_id:int}/compute/", status_code=202, responses=WAIT_RESPONSES)
async def compute_segment(response: Response, segment_id: int = Depends(segment_id_param),
                          wait: float = Depends(wait_seconds), principal: Principal = Depends(WRITE),
                          runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a membership computation (a job already queued for the segment is reused):
    ``{status: "queued", job_id}``. With ``?wait=SECONDS``, the job itself, once it has
    finished (200) or as it is when the wait is over (202)."""
    job_id = await run_in_threadpool(runtime.compute.enqueue, principal.tenant_id, segment_id, "api")
    response.headers["Location"] = f"/api/segments/jobs/{job_id}/"
    if not wait:
        return {"status": "queued", "job_id": job_id}
    return await finished_or_current(lambda: runtime.compute.get_job(principal.tenant_id, job_id), wait, response)


@router.get("/{segment_id:int}/jobs/")
def list_jobs(request: Request, segment_id: int = Depends(segment_id_param), page: OffsetPage = Depends(offset_params),
              principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    """Newest first."""
    if not _store(runtime).exists(principal.tenant_id, segment_id):
        raise tenant_scoped_404("segment", segment_id)
    count, jobs = runtime.compute.list_jobs(principal.tenant_id, segment_id, page.limit, page.offset)
    return offset_response(request, page, count, jobs)


@router.get("/{segment_id:int}/jobs/{job_id:int}/")
def get_segment_job(job_id: int, segment_id: int = Depends(segment_id_param), principal: Principal = Depends(READ),
                    runtime: Runtime = Depends(get_runtime)) -> dict:
    if not _store(runtime).exists(principal.tenant_id, segment_id):
        raise tenant_scoped_404("segment", segment_id)
    job = runtime.compute.get_job(principal.tenant_id, check_id("job", job_id), segment_id)
    if job is None:
        raise tenant_scoped_404("job", job_id)
    return job
