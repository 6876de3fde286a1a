"""Delivery API: per-user membership (single and bulk) and the paginated member list.

``GET /api/segments/membership/?user_id=`` is the hot path. ``MembershipFastPath`` answers it
before routing (a pure ASGI middleware: walking FastAPI's route table costs more than the rest
of the request; an idiomatic FastAPI route is several times slower, see
benchmarks/bench_membership.py). It calls the same functions as every other route:
``authenticate_request`` (auth + rate limit) and the ``require("membership:read")`` check, and
answers errors in the same envelope; a plain route of the same path documents it in OpenAPI. The answer comes from the in-memory index; only segments
never computed cost a DuckDB query (in the threadpool), and then the answer says
``cached: false``.

``GET /api/segments/<id>/members/`` pages through the segment's current computation; the cursor
pins that computation, so a walk started before a recompute finishes on the same snapshot.
A segment that was never computed answers **409** ``segment_not_computed`` (an empty list would
be indistinguishable from a segment that matches no one); a cursor whose snapshot has been
removed by retention (older than an hour and not among the newest three computations) answers
**410** ``cursor_expired``: start again without a cursor.
"""
from __future__ import annotations

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.deps import (
    RATE_LIMIT_STATE_KEY,
    Principal,
    authenticate_request,
    check_id,
    get_runtime,
    require,
    runtime_of,
    valid_id,
)
from api.errors import ApiError, ErrorEnvelope
from api.observe import ROUTE_KEY
from api.pagination import cursor_response, decode_cursor, encode_cursor
from engine.membership.computations import DEFAULT_MEMBERS_LIMIT, MAX_MEMBERS_LIMIT
from engine.membership.index import MAX_BULK_USERS
from engine.runtime import Runtime

PREFIX = "/api/segments"
router = APIRouter(prefix=PREFIX, tags=["membership"])
READ = require("membership:read")
LOOKUP_PATH = f"{PREFIX}/membership/"
MAX_USER_ID_LENGTH = 512
_MEMBERS_ERRORS = {409: {"model": ErrorEnvelope, "description": "segment_not_computed"},
                   410: {"model": ErrorEnvelope, "description": "cursor_expired: start again without a cursor"}}


def _check_user_id(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError.field(path, "a non-empty user id is required", "invalid_user_id")
    if len(value) > MAX_USER_ID_LENGTH:
        raise ApiError.field(path, f"at most {MAX_USER_ID_LENGTH} characters", "invalid_user_id")
    return value


async def _lookup_body(request: Request) -> bytes:
    """The JSON answer of GET /api/segments/membership/?user_id= (raises ApiError)."""
    principal = await READ(authenticate_request(request))
    user_id = _check_user_id(request.query_params.get("user_id"), "user_id")
    index = runtime_of(request).membership
    segment_ids, complete = index.lookup(principal.tenant_id, user_id)
    if complete:
        return orjson.dumps({"user_id": user_id, "segment_ids": list(segment_ids), "cached": True})
    answer = (await run_in_threadpool(index.memberships, principal.tenant_id, [user_id]))[0]
    return orjson.dumps(answer.to_json())


class MembershipFastPath:
    """Pure ASGI middleware (installed by api.app, outside routing) answering
    ``GET /api/segments/membership/?user_id=`` -> ``{user_id, segment_ids, cached}`` before
    routing. It sits outside ``RateLimitHeadersMiddleware``, so it adds the rate-limit headers
    itself."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != LOOKUP_PATH or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        scope[ROUTE_KEY] = LOOKUP_PATH
        request = Request(scope, receive)
        try:
            status, body, headers = 200, await _lookup_body(request), {}
        except ApiError as err:
            status, body, headers = err.status, orjson.dumps(err.body()), err.headers
        headers = {**(scope.get("state") or {}).get(RATE_LIMIT_STATE_KEY, {}), **headers}
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items())]})
        await send({"type": "http.response.body", "body": body})


@router.get(LOOKUP_PATH.removeprefix(PREFIX), summary="Per-user membership check")
async def membership_lookup(request: Request, user_id: str = Query(..., max_length=MAX_USER_ID_LENGTH)) -> Response:
    """`{user_id, segment_ids, cached}`. MembershipFastPath answers this path before routing; the route
    publishes it in OpenAPI and answers the same way where the fast path is not installed."""
    return Response(await _lookup_body(request), media_type="application/json")


@router.post("/membership/", description=(
    "Bulk membership: `{\"user_ids\": [...]}` (at most 1000) -> `{\"results\": [{user_id, segment_ids, cached}]}`."
    " The single-user form is `GET /api/segments/membership/?user_id=` -> `{user_id, segment_ids, cached}`."))
async def membership_bulk(user_ids: list = Body(..., embed=True), principal: Principal = Depends(READ),
                          runtime: Runtime = Depends(get_runtime)) -> Response:
    if len(user_ids) > MAX_BULK_USERS:
        raise ApiError.field("user_ids", f"at most {MAX_BULK_USERS} user ids per request ({len(user_ids)} given)",
                             "too_many_user_ids")
    checked = [_check_user_id(value, f"user_ids[{i}]") for i, value in enumerate(user_ids)]
    index = runtime.membership
    answers, complete = index.lookup_many(principal.tenant_id, checked)
    if complete:
        results = [{"user_id": user_id, "segment_ids": list(ids), "cached": True}
                   for user_id, ids in zip(checked, answers)]
    else:
        memberships = await run_in_threadpool(index.memberships, principal.tenant_id, checked)
        results = [m.to_json() for m in memberships]
    return Response(orjson.dumps({"results": results}), media_type="application/json")


def _after(cursor: str | None) -> tuple[int, str] | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    if (not isinstance(value, dict) or not isinstance(value.get("c"), int) or isinstance(value.get("c"), bool)
            or not valid_id(value["c"]) or not isinstance(value.get("u"), str)):
        raise ApiError.field("cursor", "not a valid cursor", "invalid_cursor")
    return value["c"], value["u"]


@router.get("/{segment_id:int}/members/", responses=_MEMBERS_ERRORS)
def list_members(segment_id: int, limit: int = Query(DEFAULT_MEMBERS_LIMIT, ge=1, le=MAX_MEMBERS_LIMIT),
                 cursor: str | None = None, principal: Principal = Depends(READ),
                 runtime: Runtime = Depends(get_runtime)) -> Response:
    after = _after(cursor)
    page = runtime.computations.members_page(principal.tenant_id, check_id("segment", segment_id), limit, after)
    next_cursor = (encode_cursor({"c": page.computation_id, "u": page.last_user_id})
                   if page.last_user_id is not None else None)
    return Response(orjson.dumps(cursor_response(page.results, next_cursor, page.count)),
                    media_type="application/json")
