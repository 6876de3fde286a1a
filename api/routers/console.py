"""The web console at ``/`` (the built bundle in ``api/console_dist/``, source in ``console/``) and the API
docs at ``/docs`` with Swagger UI's files from the same bundle (``docs/``, npm's swagger-ui-dist), so both
work with no network. Plain Starlette routes: no credential, no tenant data, not in the OpenAPI document; the console
itself only calls the public ``/api/`` routes with the user's own credential."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

CONSOLE_DIST = Path(__file__).resolve().parents[1] / "console_dist"
SWAGGER_DIR = CONSOLE_DIST / "docs"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
NOT_BUILT = ("<!doctype html><title>segops</title><p>The console is not built: run "
             "<code>cd console &amp;&amp; npm ci &amp;&amp; npm run build</code>. The API is at /api/, its docs at "
             '<a href="/docs">/docs</a>.</p>')


def _file(directory: Path, name: str, cache: str) -> Response:
    """A file directly in ``directory``, never one outside it."""
    target = (directory / name).resolve()
    if target.parent != directory.resolve() or not target.is_file():
        return Response(status_code=404)
    return FileResponse(target, headers={"Cache-Control": cache})


async def console_index(request: Request) -> Response:
    index = CONSOLE_DIST / "index.html"
    if not index.is_file():
        return HTMLResponse(NOT_BUILT, status_code=503)
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


async def console_asset(request: Request) -> Response:
    # Vite names each asset after its content hash: a new build is a new URL.
    return _file(CONSOLE_DIST / "assets", request.path_params["name"], "public, max-age=31536000, immutable")


async def docs(request: Request) -> Response:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="segops API", swagger_js_url="/docs/static/"
                               "swagger-ui-bundle.js", swagger_css_url="/docs/static/swagger-ui.css",
                               swagger_favicon_url="/docs/static/favicon-32x32.png",
                               swagger_ui_parameters={"persistAuthorization": True})


async def docs_static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SWAGGER_FILES:
        return Response(status_code=404)
    return _file(SWAGGER_DIR, name, "no-cache")


# A list, not add_route calls: nothing registers at import time (tests/test_architecture.py).
router = APIRouter(routes=[
    Route(path, endpoint, methods=["GET"], include_in_schema=False)
    for path, endpoint in (("/", console_index), ("/assets/{name}", console_asset), ("/docs", docs),
                           ("/docs/static/{name}", docs_static))
])


SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "An API key (sk_live_...); `Authorization: ApiKey sk_live_...` works too."},
    "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "An access token from POST /api/auth/token/ (60 minutes)."},
}


def install_security_schemes(app) -> None:
    """Name the two credentials in the OpenAPI document, so /docs' Authorize button offers both (either one
    is enough; routes that need none, such as login, ignore it)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
