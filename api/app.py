"""The ASGI app factory. HTTP only: routers, auth dependencies, error envelope."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.convertors import IntegerConvertor, register_url_convertor

from api.deps import RateLimitHeadersMiddleware
from api.errors import COMMON_ERROR_RESPONSES, install_error_handlers
from api.observe import ObserveRequests
from api.routers import (
    assets,
    auth,
    brand_kits,
    broadcasts,
    catalog,
    console,
    emails,
    events,
    exports,
    journeys,
    keys,
    membership,
    ops,
    profiles,
    recipients,
    segments,
    templates,
)
from engine.runtime import Runtime, tune_gc_for_serving
from engine.settings import Settings

# One router per resource (api/routers/<name>.py), included in this order: membership and exports
# before segments, so that their fixed paths (/api/segments/membership/) win over
# /api/segments/{segment_id:int}/.
ROUTERS = (auth, keys, events, membership, exports, segments, profiles, templates, brand_kits, assets, emails,
           journeys, broadcasts, recipients, ops, catalog, console)


class _IdConvertor(IntegerConvertor):
    """``{name:int}`` path parameters match at most 19 digits, which covers every id SQLite's INTEGER
    can hold. Starlette's own convertor matches any run of digits and calls ``int()`` on it, which
    raises past 4,300 digits (CPython's limit on decimal conversion): a 500 from the router itself. A
    longer number cannot name a resource, so here it is no route match, i.e. a 404."""

    regex = "[0-9]{1,19}"


_ID_CONVERTOR = _IdConvertor()


def register_id_convertor() -> None:
    """Starlette keeps convertors in one table per process; FastAPI compiles an included route's path
    (prefix + path) when the app includes its router, so this must run before ``include_router``.
    Idempotent: the same instance each time."""
    register_url_convertor("int", _ID_CONVERTOR)


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
    register_id_convertor()
    body_limits: dict[str, int] = {}  # route template -> bytes (0: the route reads its body under its own cap)
    for module in ROUTERS:
        app.include_router(module.router, responses=COMMON_ERROR_RESPONSES)
        body_limits.update(getattr(module, "BODY_LIMITS", {}))
    # a pure ASGI answer for the hot path, outside every middleware but ObserveRequests (as before)
    app.add_middleware(membership.MembershipFastPath)
    console.install_security_schemes(app)  # /docs' Authorize: ApiKey and Bearer
    # outermost, so that it sees every request, fast paths included
    app.add_middleware(ObserveRequests, metrics=rt.metrics, max_body_bytes=settings.max_body_bytes,
                       body_limits=body_limits)
    return app
