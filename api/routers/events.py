"""Event ingest: ``POST /api/events/`` (track) and ``POST /api/events/identify/`` (profile traits).

Hot path: the body is read raw (no FastAPI body model) and validated by
``engine.ingest.parse``; the request schema is still published in OpenAPI via
``openapi_extra``. A 202 is sent only after the events are fsync'd to the
write-ahead log (``engine.ingest.service``); the handler awaits that without blocking the loop.

Design notes for clients:
* SegmentFlow's v1 ``events.track`` names the type ``event``/``name``; here it is
  ``event_type`` only (an unknown field is a 400, so a misnamed field never goes unnoticed).
* ``event_id`` is the idempotency key: a retry of an acknowledged event answers 202 and
  counts it under ``duplicates`` (per tenant, for at least 7 days).
* Profiles are written with the separate identify route, not a ``type`` field: traits
  are merged per trait (latest ``occurred_at`` wins), never deduplicated.
"""
from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import Principal, get_runtime, require
from api.pagination import OffsetPage, offset_params, offset_response
from engine.ingest.service import IngestUnavailable, now_us
from engine.ingest.parse import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    IngestError,
    IngestTooLarge,
    parse_identify,
    parse_track,
)
from engine.runtime import Runtime

router = APIRouter(prefix="/api/events", tags=["events"])
WRITE = require("events:write")
# These routes read their bodies under MAX_BATCH_BYTES themselves (0: api.observe applies no cap of its own).
BODY_LIMITS = {"/api/events/": 0, "/api/events/identify/": 0}

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
_TIMESTAMP = {"type": "string", "format": "date-time",
              "description": "ISO 8601 with Z or an offset; defaults to the receive time. A "
                             "timestamp without a zone is rejected."}
_TRACK_ITEM = {
    "type": "object", "additionalProperties": False, "required": ["user_id", "event_type"],
    "properties": {
        "user_id": _ID,
        "event_type": {**_ID, "description": "e.g. order_placed (SegmentFlow v1 calls this event/name)"},
        "event_id": {**_ID, "description": "Client message id; the dedup key. Generated (UUIDv7) if absent."},
        "occurred_at": _TIMESTAMP,
        "properties": {"type": "object", "additionalProperties": True},
    },
    "description": f"One event, at most {MAX_EVENT_BYTES} bytes as compact JSON.",
}
_IDENTIFY_ITEM = {
    "type": "object", "additionalProperties": False, "required": ["user_id", "traits"],
    "properties": {
        "user_id": _ID,
        "traits": {"type": "object", "additionalProperties": True,
                   "description": "e.g. email, country, plan, signup_date; merged per trait"},
        "occurred_at": _TIMESTAMP,
    },
}


def _body_schema(item: dict) -> dict:
    batch = {"type": "object", "additionalProperties": False, "required": ["batch"],
             "properties": {"batch": {"type": "array", "items": item, "minItems": 1,
                                      "maxItems": MAX_BATCH_ITEMS}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [item, batch],
        "description": f"One item or a batch; at most {MAX_BATCH_BYTES} bytes. All-or-nothing: an "
                       "invalid item rejects the batch and every bad field is named."}}}}}


class TrackResult(BaseModel):
    accepted: int
    duplicates: int
    journeys_matched: int


class IdentifyResult(BaseModel):
    accepted: int


_ERRORS = {400: {"description": "Invalid body: `code` is malformed_json, missing_field, invalid_type, "
                                "invalid_value, unknown_field, invalid_timestamp or empty_batch; each bad "
                                "field is named, e.g. `batch[3].user_id`."},
           413: {"description": "event_too_large (`batch[5]`), batch_too_large or batch_too_many_events."},
           503: {"description": "Ingest temporarily unavailable (Retry-After)."}}


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    too_large = IngestTooLarge("batch_too_large", f"body: request body exceeds {MAX_BATCH_BYTES} bytes",
                               {"body": [f"at most {MAX_BATCH_BYTES} bytes"]})
    if length.isdigit() and int(length) > MAX_BATCH_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _accepted(body: dict) -> Response:
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


def _count_rejected(runtime: Runtime, kind: str, err: IngestError | IngestUnavailable) -> None:
    """The rejection counter; the error itself answers through the app's one error mapping."""
    runtime.metrics.ingest_rejected.labels(kind, err.code).inc()


@router.post("/", status_code=202, openapi_extra=_body_schema(_TRACK_ITEM),
             responses={202: {"model": TrackResult, "description": "Durably accepted"}, **_ERRORS})
async def track(request: Request, principal: Principal = Depends(WRITE),
                runtime: Runtime = Depends(get_runtime)) -> Response:
    """Track one event or a batch of up to 10,000. 202 means the accepted events are on disk."""
    received = now_us()
    try:
        columns = parse_track(await _read_body(request), received)
        future = runtime.ingest.submit_events(principal.tenant_id, columns, received)
        outcome = await asyncio.wrap_future(future)
    except (IngestError, IngestUnavailable) as err:
        _count_rejected(runtime, "track", err)
        raise
    runtime.metrics.ingested("track", outcome.accepted, outcome.duplicates)
    matched = 0
    if runtime.event_feed.has_accepted and outcome.accepted:
        matched = await run_in_threadpool(runtime.event_feed.accepted, principal.tenant_id, outcome.events)
    return _accepted({"accepted": outcome.accepted, "duplicates": outcome.duplicates, "journeys_matched": matched})


@router.post("/identify/", status_code=202, openapi_extra=_body_schema(_IDENTIFY_ITEM),
             responses={202: {"model": IdentifyResult, "description": "Durably accepted"}, **_ERRORS})
async def identify(request: Request, principal: Principal = Depends(WRITE),
                   runtime: Runtime = Depends(get_runtime)) -> Response:
    """Set profile traits for one user or a batch; per trait the latest ``occurred_at`` wins."""
    received = now_us()
    try:
        columns = parse_identify(await _read_body(request), received)
        accepted = await asyncio.wrap_future(runtime.ingest.submit_profiles(principal.tenant_id, columns, received))
    except (IngestError, IngestUnavailable) as err:
        _count_rejected(runtime, "identify", err)
        raise
    runtime.metrics.ingested("identify", accepted)
    return _accepted({"accepted": accepted})


@router.get("/dead-letters/")
def dead_letters(request: Request, page: OffsetPage = Depends(offset_params), principal: Principal = Depends(WRITE),
                 runtime: Runtime = Depends(get_runtime)) -> dict:
    """Accepted events and identifies of the caller's tenant that the lake could not take (newest
    first): each with ``reason`` and the original ``record`` (timestamps also as ``<name>_us``,
    microseconds since the epoch). The flusher moved them aside so everything else kept flowing."""
    count, letters = runtime.dead_letters.list(principal.tenant_id, page.limit, page.offset)
    return offset_response(request, page, count, letters)
