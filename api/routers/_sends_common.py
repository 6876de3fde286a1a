"""Shared by the engagement routers (templates, brand kits, assets, emails, journeys, broadcasts,
recipients): header-safe text, Idempotency-Key handling, the routes' own error statuses in OpenAPI.

Not a router itself (api.app includes only the routers in its ROUTERS list).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from pydantic import AfterValidator
from starlette.responses import Response

from api.deps import Principal, authenticated
from api.errors import MAPPED_ERRORS, ApiError, ErrorEnvelope, to_api_error
from engine.runtime import Runtime
from engagement.idempotency import fingerprint


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("goes into an email header: a line break (CR or LF) is not allowed")
    return value


# A field that ends up in an email header (subject, sender and reply-to names and addresses, the
# recipient): a CR or LF is refused (400 naming the field) rather than encoded into something the
# author did not mean.
HeaderText = Annotated[str, AfterValidator(_one_line)]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def idempotent(request: Request, principal: Principal, runtime: Runtime, payload: Any,
               handler: Callable[[], tuple[int, Any]]) -> Response:
    """Run a creating POST at most once per ``Idempotency-Key`` (engagement/idempotency.py).
    ``payload`` is the parsed body (the fingerprint, with method and path); ``handler`` returns
    (status, JSON body). Client errors are stored and replayed like successes; server errors
    and 409s release the key."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, body = handler()
        return json_response(body, status)
    store = runtime.sends.idempotency
    tenant_id = principal.tenant_id
    replay = store.begin(tenant_id, key, fingerprint(request.method, request.url.path, payload))
    if replay is not None:
        return Response(replay.body, status_code=replay.status_code, media_type="application/json",
                        headers={**replay.headers, "Idempotent-Replayed": "true"})
    try:
        status, body = handler()
        data = orjson.dumps(body)
    except MAPPED_ERRORS as err:
        error = to_api_error(err)
        if error.status in (409, 429) or error.status >= 500:
            store.release(tenant_id, key)
        else:
            store.finish(tenant_id, key, error.status, orjson.dumps(error.body()), error.headers)
        raise error from None
    except BaseException:
        store.release(tenant_id, key)
        raise
    store.finish(tenant_id, key, status, data, {})
    return Response(data, status_code=status, media_type="application/json")


def any_scope(*scopes: str):
    """Dependency: the Principal if it holds at least one of ``scopes`` (reads of sends)."""
    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        if not principal.scopes & set(scopes):
            raise ApiError(403, f"This credential needs one of the scopes {', '.join(scopes)}.", "missing_scope",
                           {"scope": list(scopes)})
        return principal

    return dependency


_DESCRIPTIONS = {409: "Conflicts with the resource's state (route-specific `code`)",
                 410: "Gone: the prepared send expired", 413: "Payload too large",
                 415: "Content-Type differs from the declared one"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's own error statuses (the common ones are app-wide)."""
    return {status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]} for status in statuses}


__all__ = ["HeaderText", "any_scope", "errors", "idempotent", "json_response"]
