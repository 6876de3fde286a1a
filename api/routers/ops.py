"""Operations: liveness, readiness and Prometheus metrics. No tenant credentials and no tenant data.

* ``GET /healthz``: the process is up and its event loop answers (nothing else is checked).
* ``GET /readyz``: this process can do its work: the metadata DB takes a write lock, the lake and
  the write-ahead log directory take a probe write, and the background workers are alive
  (engine.health). 503 ``not_ready`` names each failed check.
* ``GET /metrics``: the Prometheus text format (engine.metrics). With ``SEGOPS_METRICS_TOKEN`` set it
  needs ``Authorization: Bearer <token>``; without, it answers only clients in
  ``SEGOPS_METRICS_CLIENTS`` (default: loopback), so a server bound to a public address does not
  publish its metrics by default.
"""
from __future__ import annotations

import hmac
import ipaddress

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_runtime
from api.errors import ApiError, ErrorEnvelope
from engine.health import OK, SKIPPED
from engine.runtime import Runtime
from engine.settings import Settings

router = APIRouter(tags=["operations"])
_JSON = "application/json"


@router.get("/healthz", summary="Liveness", responses={200: {"description": '`{"status": "ok"}`'}})
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type=_JSON)


@router.get("/readyz", summary="Readiness", responses={
    200: {"description": '`{"status": "ready", "checks": {"metadata": "ok", "lake": "ok", "wal": "ok", '
                         '"workers": "ok"}}` (a check not run by this process says "skipped")'},
    503: {"model": ErrorEnvelope, "description": "not_ready: each failed check is a key, and `checks` has all"}})
def readyz(runtime: Runtime = Depends(get_runtime)) -> Response:
    """Sync: the probes touch the disk (and S3), so they run in the threadpool."""
    checks = runtime.readiness()
    failed = {name: [result] for name, result in checks.items() if result not in (OK, SKIPPED)}
    if not failed:
        return Response(orjson.dumps({"status": "ready", "checks": checks}), media_type=_JSON)
    err = ApiError(503, "not ready: " + "; ".join(f"{name} {messages[0]}" for name, messages in failed.items()),
                   "not_ready", failed)
    return Response(orjson.dumps({**err.body(), "checks": checks}), status_code=503, media_type=_JSON)


@router.get("/metrics", summary="Prometheus metrics", responses={
    200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"},
    403: {"model": ErrorEnvelope, "description": "metrics_forbidden: client not in SEGOPS_METRICS_CLIENTS"}})
def metrics(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Sync: collecting reads the metadata DB."""
    _check_metrics_access(request, runtime.settings)
    return Response(runtime.metrics.exposition(), media_type=runtime.metrics.content_type)


def _check_metrics_access(request: Request, settings: Settings) -> None:
    if settings.metrics_token is not None:
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "GET /metrics needs 'Authorization: Bearer <SEGOPS_METRICS_TOKEN>'.",
                           "metrics_token_required", headers={"WWW-Authenticate": 'Bearer realm="segops-metrics"'})
        return
    try:
        address = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        address = None
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is loopback too
    if address is None or not any(address in network for network in settings.metrics_networks):
        raise ApiError(403, "GET /metrics answers only clients in SEGOPS_METRICS_CLIENTS (default: loopback) "
                            "unless SEGOPS_METRICS_TOKEN is set.", "metrics_forbidden")
