"""The ASGI app factory. HTTP only: routers, auth dependencies, error envelope."""
from __future__ import annotations

import importlib
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import RateLimitHeadersMiddleware
from api.errors import COMMON_ERROR_RESPONSES, install_error_handlers
from api.observe import ObserveRequests
from api.routers.console import install_security_schemes
from engine.runtime import Runtime, tune_gc_for_serving
from engine.settings import Settings

# One router per resource, in api/routers/<name>.py, each exposing `router`.
ROUTERS = (
    # membership/exports before segments: their fixed paths (/api/segments/membership/) must win
    # over /api/segments/{segment_id:int}/.
    "auth", "keys", "events", "membership", "exports", "segments", "profiles",
    "templates", "brand_kits", "assets", "emails", "journeys", "broadcasts", "recipients", "ops",
    "catalog", "console",
)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.run_workers:
            rt.start_workers()
        if settings.serve_process:  # set by `segops serve`; not in tests
            tune_gc_for_serving()
        try:
            yield
        finally:
            rt.stop()

    app = FastAPI(title="segops", version="0.1.0", lifespan=lifespan, docs_url=None)  # /docs: api.routers.console
    app.state.runtime = rt
    install_error_handlers(app)
    app.add_middleware(RateLimitHeadersMiddleware)
    body_limits: dict[str, int] = {}
    for name in ROUTERS:
        try:
            module = importlib.import_module(f"api.routers.{name}")
        except ModuleNotFoundError as exc:  # router not built yet
            if exc.name != f"api.routers.{name}":
                raise
            continue
        app.include_router(module.router, responses=COMMON_ERROR_RESPONSES)
        if hasattr(module, "fast_path"):  # a pure ASGI answer for a hot path (api/routers/membership.py)
            app.add_middleware(module.fast_path)
        body_limits.update(getattr(module, "BODY_LIMITS", {}))  # route template -> bytes (0: the route's own)
    install_security_schemes(app)
    # outermost, so that it sees every request, fast paths included
    app.add_middleware(ObserveRequests, metrics=rt.metrics, max_body_bytes=settings.max_body_bytes,
                       body_limits=body_limits)
    return app
