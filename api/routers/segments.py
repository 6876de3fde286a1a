"""Segments: CRUD, version history, preview, JSON Schema of definitions, compute jobs.

Handlers are plain ``def``: FastAPI runs them in its threadpool, so DuckDB queries and
SQLite writes never block the event loop (compute is ``async``: its ``?wait`` holds no thread).
Ids are ``{...:int}`` path converters, so the fixed paths (``preview/``, ``schema/``,
``jobs/``) never collide with a segment id.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Principal, check_body_tenant, check_id, get_runtime, id_param, require, tenant_scoped_404
from api.errors import ApiError, ErrorEnvelope
from api.pagination import OffsetPage, offset_params, offset_response
from api.waiting import WAIT_RESPONSES, finished_or_current, wait_seconds
from compiler import DIALECTS, definition_json_schema
from engine.segments import explain
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
EXPLAIN = require("segments:read", "profiles:read")  # an explanation shows the user's events and traits

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
    impact_id: str | None = Field(None, max_length=4000, description=(
        "The impact (POST .../impact/) of this definition the author saw: the new version records it."))


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


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    definition: Any = Field()
    user_id: str
    as_of: str | None = AS_OF


class ImpactRequest(BaseModel):
    """A draft definition (not saved). ``definition`` is checked after the segment is found."""

    model_config = ConfigDict(extra="forbid")
    definition: Any = None
    sample: int = Field(explain.DEFAULT_SAMPLE, ge=0, le=explain.MAX_SAMPLE)


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


@router.post("/explain/")
def explain_definition(body: ExplainRequest, principal: Principal = Depends(EXPLAIN),
                       runtime: Runtime = Depends(get_runtime)) -> dict:
    """Why ``user_id`` is in (or out of) a definition at ``as_of``: the definition tree with, at every
    node, whether it held and the values that decided it, from the same compiled SQL as membership."""
    return runtime.explainer.explain_definition(principal.tenant_id, body.definition, body.user_id,
                                                as_of=body.as_of).to_json()


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


@router.patch("/{segment_id:int}/", responses={
    409: {"model": ErrorEnvelope, "description": "impact_outdated: the segment changed since the impact"}})
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
    impact = None if body.impact_id is None else _impact_seen(runtime, principal.tenant_id, segment_id, body)
    return store.update(principal.tenant_id, segment_id, author=_author(principal), definition=definition,
                        impact=impact, **fields)


def _impact_seen(runtime: Runtime, tenant_id: int, segment_id: int, body: SegmentUpdate) -> dict:
    if "definition" not in body.model_fields_set:
        raise ApiError.field("impact_id", "give the definition the impact was computed for", "invalid_impact")
    segment = _get_or_404(runtime, tenant_id, segment_id)
    return runtime.explainer.read_impact(tenant_id, segment_id, body.impact_id, body.definition, segment["version"])


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


@router.get("/{segment_id:int}/explain/")
def explain_segment(user_id: str, as_of: str | None = Query(None, description=AS_OF.description),
                    version: int | None = None, computation: int | None = None,
                    segment_id: int = Depends(segment_id_param), principal: Principal = Depends(EXPLAIN),
                    runtime: Runtime = Depends(get_runtime)) -> dict:
    """Explain the segment's current definition (or ``version``) for ``user_id`` at ``as_of``, or the
    answer computation ``computation`` gave (at its as_of). An unknown user answers ``in_universe: false``."""
    version = None if version is None else check_id("version", version)
    computation = None if computation is None else check_id("computation", computation)
    return runtime.explainer.explain_segment(principal.tenant_id, segment_id, user_id, as_of=as_of, version=version,
                                             computation=computation)


@router.post("/{segment_id:int}/impact/")
def segment_impact(body: ImpactRequest | None = Body(None), segment_id: int = Depends(segment_id_param),
                   principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)) -> dict:
    """What saving ``definition`` would change, against the current computation (at its as_of): who
    would enter, stay and leave, journey runs started or exited, prepared broadcasts' audiences.
    Nothing is saved or sent."""
    body = body or ImpactRequest()
    _get_or_404(runtime, principal.tenant_id, segment_id)
    if "definition" not in body.model_fields_set:
        raise ApiError.field("definition", "field required", "missing_field")
    return runtime.explainer.impact(principal.tenant_id, segment_id, body.definition, sample=body.sample)


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
