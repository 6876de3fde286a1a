"""The error envelope of the seed (segops-api-overview): ``{"detail": ...}`` plus, for field
errors, ``{"<field path>": ["message"]}``. We add a stable machine ``code`` to every error.

Example::

    {"detail": "batch[17].occurred_at: not an ISO 8601 timestamp",
     "code": "invalid_timestamp",
     "batch[17].occurred_at": ["not an ISO 8601 timestamp"]}
"""
from __future__ import annotations

import json
import re
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from compiler import DefinitionError
from engine.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)

STATUS_CODES = {400: "bad_request", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited", 500: "server_error"}


class ErrorEnvelope(BaseModel):
    """The error body (OpenAPI): ``detail`` and ``code``, plus one key per offending field path."""

    model_config = ConfigDict(extra="allow")
    detail: str
    code: str


# Answers any route may give (validation, credentials, scope, tenancy, rate limit); api.app
# documents them on every route. Routes document their own others (409, 410, 413, 503, ...).
COMMON_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description} for status, description in (
        (400, "Invalid request: `code` and the offending field paths are in the body"),
        (401, "Missing or invalid credentials"),
        (403, "The credential lacks a scope (`missing_scope`) or may not send"),
        (404, "No such resource in the caller's tenant"),
        # Listed so that FastAPI does not document its own 422 body, which this app never sends.
        (422, "Well-formed but not processable (route-specific `code`)"),
        (429, "Rate limit exceeded (Retry-After)"),
    )}


class ApiError(Exception):
    """An answer built in api/ (credentials, scopes, request checks); rendered as the seed's envelope.
    The engine raises engine.errors kinds instead (``to_api_error``)."""

    def __init__(self, status: int, detail: str, code: str | None = None,
                 fields: dict[str, list[str]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or STATUS_CODES.get(status, "error")
        self.fields = fields or {}
        self.headers = headers or {}

    @classmethod
    def field(cls, path: str, message: str, code: str = "invalid", status: int = 400) -> "ApiError":
        return cls(status, f"{path}: {message}", code, {path: [message]})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "code": self.code}
        for path, messages in self.fields.items():
            body.setdefault(path, messages)
        return body


# The HTTP status of each kind of domain error: the only place that decides it. An exception answers
# the status of the first kind in its class's MRO (SegmentNotFound: NotFound's; TooLarge, an
# InvalidInput, its own 413). A DomainError of no kind is a bug: 500.
STATUS_OF_KIND: dict[type[DomainError], int] = {
    InvalidInput: 400, TooLarge: 413, UnsupportedMedia: 415, Unprocessable: 422, NotAuthenticated: 401,
    Forbidden: 403, NotFound: 404, Conflict: 409, Gone: 410, RateLimited: 429, Unavailable: 503}
# Every exception ``to_api_error`` turns into the envelope.
MAPPED_ERRORS = (ApiError, DomainError, DefinitionError)


def to_api_error(exc: ApiError | DomainError | DefinitionError) -> ApiError:
    """The one mapping from what the engine raises to the error envelope: status by the kind (the
    first of the exception's classes in ``STATUS_OF_KIND``), ``Retry-After`` from ``retry_after``,
    ``X-RateLimit-*`` from a rate limit, ``WWW-Authenticate`` on a rejected credential."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DefinitionError):
        fields: dict[str, list[str]] = {}
        for item in exc.errors:
            fields.setdefault(item.path, []).append(item.message)
        return ApiError(400, str(exc.errors[0]), exc.code, fields)
    status = next((STATUS_OF_KIND[kind] for kind in type(exc).__mro__ if kind in STATUS_OF_KIND), 500)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers = {"X-RateLimit-Limit": str(exc.limit), "X-RateLimit-Remaining": str(exc.remaining),
                   "X-RateLimit-Reset": str(exc.reset)}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="segops"'
    return ApiError(status, exc.detail, exc.code, exc.fields, headers)


def error_response(err: ApiError) -> Response:
    try:
        content = orjson.dumps(err.body())
    except orjson.JSONEncodeError:  # an unpaired surrogate quoted from the input: escape it, as json does
        content = json.dumps(err.body()).encode()
    return Response(content, status_code=err.status, media_type="application/json", headers=err.headers)


def _loc_to_path(loc: tuple) -> str:
    """('body', 'batch', 17, 'occurred_at') -> 'batch[17].occurred_at'."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


# Only a body holding a \uD800-\uDFFF escape, or the raw bytes of one (json.loads decodes bytes with
# surrogatepass), can decode to a string with an unpaired surrogate; only such a body is walked.
_SURROGATE_IN_JSON = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins a valid pair into one character


def unpaired_surrogate_path(value: Any) -> str | None:
    """The field path of the first string or key in decoded JSON that holds an unpaired UTF-16
    surrogate, else None. Iterative: any depth json.loads accepted is fine."""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return _loc_to_path(loc)
        elif isinstance(item, dict):
            for key in item:
                if _SURROGATE.search(key):
                    return _loc_to_path((*loc, key))
            stack.extend(((*loc, key), sub) for key, sub in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*loc, i), sub) for i, sub in reversed(list(enumerate(item))))
    return None


async def refuse_unpaired_surrogates(request: Request) -> None:
    """Dependency of every route: 400 ``invalid_unicode`` naming the field if the JSON body that FastAPI
    decoded holds an unpaired surrogate (``"\\ud800"``). json.loads accepts one, but no UTF-8 encoder does
    (SQLite, orjson, DuckDB), so it would surface as a 500 wherever the string went. Routes that read
    their body themselves (ingest, asset uploads) have no body field and parse it with orjson, which
    refuses such strings."""
    if getattr(request.scope.get("route"), "body_field", None) is None:
        return
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not (media.startswith("application/") and (media.endswith("/json") or media.endswith("+json"))):
        return
    if not _SURROGATE_IN_JSON.search(await request.body()):  # FastAPI has read it: cached
        return
    try:
        path = unpaired_surrogate_path(await request.json())  # cached too
    except ValueError:  # not JSON at all: FastAPI has answered that already
        return
    if path is not None:
        raise ApiError.field(path, "contains an unpaired UTF-16 surrogate (not valid Unicode)", "invalid_unicode")


def install_error_handlers(app: FastAPI) -> None:
    """The envelope for every error, and the body check every route shares (added to the app's own
    dependencies, so call this before including routers)."""
    app.router.dependencies.append(Depends(refuse_unpaired_surrogates))

    async def _mapped(_: Request, exc: Exception) -> Response:
        return error_response(to_api_error(exc))

    for error_class in MAPPED_ERRORS:
        app.add_exception_handler(error_class, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        fields: dict[str, list[str]] = {}
        for e in exc.errors():
            fields.setdefault(_loc_to_path(tuple(e.get("loc", ()))), []).append(e.get("msg", "invalid"))
        first = next(iter(fields.items()))
        return error_response(ApiError(400, f"{first[0]}: {first[1][0]}", "validation_error", fields))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return error_response(ApiError(exc.status_code, detail, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> Response:  # pragma: no cover - last resort
        return error_response(ApiError(500, "Internal server error", "server_error"))
