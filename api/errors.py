"""The error envelope of the seed (segops-api-overview): ``{"detail": ...}`` plus, for field
errors, ``{"<field path>": ["message"]}``. We add a stable machine ``code`` to every error.

Example::

    {"detail": "batch[17].occurred_at: not an ISO 8601 timestamp",
     "code": "invalid_timestamp",
     "batch[17].occurred_at": ["not an ISO 8601 timestamp"]}
"""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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
    """Raise from anywhere below a router; rendered as the seed's envelope."""

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


def error_response(err: ApiError) -> Response:
    return Response(orjson.dumps(err.body()), status_code=err.status,
                    media_type="application/json", headers=err.headers)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

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
