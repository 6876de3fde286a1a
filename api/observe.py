"""One pure ASGI middleware around every request: request id, body cap, metrics, access log.

It is the outermost of the app's middlewares (the membership fast path included), so it costs what
the hot path can afford: one pass over the headers, two clock reads, a cached metric lookup, and a
log record only when the access log is on (``segops serve``). Nothing it records names a credential
or user input: the route is the template (``/api/segments/{segment_id}/``, never the path or query
string), an incoming ``X-Request-ID`` is kept only if it is a short token, else a new one is made,
and it is echoed in the response either way.

Request bodies are capped at ``max_body_bytes`` while they stream: a Content-Length over the cap is
refused before the first byte is read, and a chunked body as soon as it passes the cap; the answer
is 413 ``payload_too_large`` in the error envelope, whatever the route was doing with the body.
A router module may set another cap per route in ``BODY_LIMITS`` (templates, whose two bodies may
hold a million characters each), or 0 for routes that read their body under a limit of their own
(ingest, asset uploads). The cap is applied on the first read of the body, i.e. after routing, when
the route is known.
"""
from __future__ import annotations

import logging
import os
import re
from time import perf_counter

from api.deps import TENANT_STATE_KEY
from api.errors import ApiError, error_response
from engine.logs import ACCESS_LOGGER
from engine.metrics import Metrics

# The route template of a request answered before routing (a ``fast_path``), set in its scope.
ROUTE_KEY = "segops.route"
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class _BodyTooLarge(Exception):
    pass


class ObserveRequests:
    def __init__(self, app, *, metrics: Metrics, max_body_bytes: int, body_limits: dict[str, int]):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_limits = body_limits
        self.access_log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = perf_counter()
        request_id = content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value if _REQUEST_ID.fullmatch(value) else None
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else None
        request_id = request_id or os.urandom(8).hex().encode()
        status, responding, overflow = 500, False, False
        limit, received = -1, 0  # the cap, resolved at the first read (0: the route's own)

        async def capped_receive():
            nonlocal limit, received, overflow
            if limit < 0:
                route = scope.get("route")
                limit = self.body_limits.get(getattr(route, "path", None), self.max_body_bytes)
                if limit and content_length is not None and content_length > limit:
                    overflow = True
                    raise _BodyTooLarge
            message = await receive()
            if limit and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _BodyTooLarge
            return message

        async def observed_send(message):
            nonlocal status, responding
            if overflow:  # the app's answer to a body it could not finish reading; ours replaces it
                return
            if message["type"] == "http.response.start":
                status, responding = message["status"], True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            try:
                await self.app(scope, capped_receive, observed_send)
            except Exception:
                if not overflow:
                    raise
            if overflow and not responding:
                overflow = False  # let our own answer through observed_send
                await error_response(ApiError(
                    413, f"body: request body exceeds {limit} bytes", "payload_too_large",
                    {"body": [f"at most {limit} bytes"]}))(scope, receive, observed_send)
        finally:
            self._record(scope, status, perf_counter() - started, request_id)

    def _record(self, scope, status: int, seconds: float, request_id: bytes) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = getattr(scope.get("route"), "path", None) or scope.get(ROUTE_KEY) or UNMATCHED
        self.metrics.observe_request(method, route, status, seconds, status == 429)
        if self.access_log.isEnabledFor(logging.INFO):
            tenant_id = (scope.get("state") or {}).get(TENANT_STATE_KEY)
            fields = {"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 3),
                      "tenant_id": tenant_id, "request_id": request_id.decode()}
            # makeRecord + handle: Logger.info would also walk the stack to find the caller
            self.access_log.handle(self.access_log.makeRecord(
                ACCESS_LOGGER, logging.INFO, "", 0, "%s %s %d %.2fms tenant=%s request_id=%s",
                (method, route, status, fields["duration_ms"], tenant_id if tenant_id is not None else "-",
                 fields["request_id"]), None, extra={"fields": fields}))
