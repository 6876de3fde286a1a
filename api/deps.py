"""Auth dependencies every router uses: who is calling, for which tenant, with which scopes.

Usage in a router::

    from api.deps import Principal, get_runtime, id_param, require, tenant_scoped_404

    router = APIRouter(prefix="/api/segments", tags=["segments"])

    @router.get("/{segment_id:int}/")
    async def get_segment(segment_id: int = Depends(id_param("segment", "segment_id")),
                          principal: Principal = Depends(require("segments:read")),
                          runtime: Runtime = Depends(get_runtime)):
        row = runtime.meta.query_one("SELECT * FROM segments WHERE id = ? AND tenant_id = ?",
                                     (segment_id, principal.tenant_id))
        if row is None:
            raise tenant_scoped_404("segment", segment_id)

Credentials (checked in this order):
  * ``Authorization: Bearer <access JWT>`` (a human user; scopes derive from the role),
  * ``Authorization: ApiKey sk_live_...`` or ``x-api-key: sk_live_...`` (a service key; role "service",
    scopes and ``allow_sends`` as minted).

Tenancy rule (every router follows it):
  * The tenant comes only from the credential (``principal.tenant_id``). Every query on a
    tenant-owned table filters ``tenant_id = principal.tenant_id``; a row of another tenant is
    indistinguishable from a missing row: answer ``raise tenant_scoped_404(kind, id)``.
  * A ``tenant`` field in a request body (the seed's segment create sends ``"tenant": 1``) is
    accepted when it names the caller's tenant and answers 404 otherwise: call
    ``check_body_tenant(principal, body.tenant)``. It is never used to pick the tenant.

``require("sends:write")`` additionally needs ``principal.allow_sends`` (403 ``sends_not_allowed``):
redeeming a send is gated per key, so an agent key can prepare broadcasts but not fire them.

Both dependencies are ``async`` so they run on the event loop (no threadpool hop on the membership
hot path); call ``authenticate_request(request)`` if you need the same check from plain code.
Rate limits are per tenant (whatever the credential), per plan: free 60, starter 300, business 1000
per minute, enterprise unlimited unless the tenant has its own ``rate_limit_per_minute``. Every
authenticated response (errors included) of a limited tenant carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the full allowance is back);
over the limit the request answers 429 ``rate_limited`` with ``Retry-After`` (seconds). Invalid
credentials are limited per client address (``invalid_credential_limit_per_address``): beyond it the
address gets 429 for any credential until ``Retry-After``. The limits hold across every API process on
the data dir (engine.ratelimit).
"""
from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Hashable, Iterable

from fastapi import Depends, Request

from api.errors import ApiError, to_api_error
from common.ids import MAX_ID, valid_id
from engine.accounts import ALL_SCOPES, AuthError, Principal
from engine.errors import RateLimited
from engine.ratelimit import Decision
from engine.runtime import Runtime

__all__ = ["Principal", "get_runtime", "runtime_of", "authenticated", "authenticate_request", "require",
           "tenant_scoped_404", "check_body_tenant", "RATE_LIMIT_STATE_KEY", "TENANT_STATE_KEY", "client_address",
           "check_limits", "refuse_blocked_address", "count_invalid_credential", "MAX_ID", "valid_id", "check_id",
           "id_param"]

# Where the rate-limit headers of this request wait for the middleware (api.app) to add them.
RATE_LIMIT_STATE_KEY = "segops_rate_limit_headers"
# The authenticated tenant of this request, for the access log (api.observe).
TENANT_STATE_KEY = "segops_tenant_id"


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_runtime(request: Request) -> Runtime:
    """Dependency: the process Runtime. Async so FastAPI calls it inline instead of
    hopping to the threadpool for a one-line lookup (the ingest hot path)."""
    return request.app.state.runtime


def _unauthorized(detail: str, code: str = "not_authenticated", scheme: str = "Bearer") -> ApiError:
    return ApiError(401, detail, code, headers={"WWW-Authenticate": f'{scheme} realm="segops"'})


def _credential(request: Request) -> tuple[str, str] | None:
    """('bearer' | 'apikey', token) from the request headers, or None."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        scheme = scheme.lower()
        token = token.strip()
        if scheme in ("bearer", "apikey") and token:
            return scheme, token
        raise _unauthorized("Authorization header must be 'Bearer <token>' or 'ApiKey <key>'",
                            "invalid_authorization_header")
    key = request.headers.get("x-api-key")
    if key:
        return "apikey", key.strip()
    return None


def client_address(request: Request) -> str:
    """The caller's address as the server sees it (uvicorn applies X-Forwarded-For from trusted proxies),
    as rate limits count it: an IPv4 address (an IPv4-mapped IPv6 one too) alone, an IPv6 address by its
    /64, which one host is routinely given whole (else it could try a new address per request)."""
    client = request.scope.get("client")
    if not client:
        return "unknown"
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def rate_limited(decision: Decision, what: str) -> ApiError:
    return to_api_error(RateLimited(f"{what}; retry in {decision.retry_after} s.", limit=decision.limit,
                                    remaining=decision.remaining, reset=decision.reset,
                                    retry_after=decision.retry_after))


def check_limits(request: Request, limits: Iterable[tuple[Hashable, int]], what: str) -> None:
    """Take a token from each ``(key, limit per minute)`` in turn; 429 at the first that is spent.
    A refused request takes nothing from the limits after it (list the narrowest first)."""
    limiter = runtime_of(request).rate_limiter
    for key, limit in limits:
        decision = limiter.hit(key, limit)
        if not decision.allowed:
            raise rate_limited(decision, what)


def _invalid_credential_key(request: Request) -> tuple[str, str]:
    return ("invalid-credential", client_address(request))


def refuse_blocked_address(request: Request, runtime: Runtime | None = None) -> None:
    """429 if this address has used up its invalid credentials. Checked before any credential, valid
    ones too (until ``Retry-After``): otherwise guessing would go on at full speed, merely answered 429.
    A dict lookup in this process (engine.ratelimit ``blocked``), cheap enough for the hot path."""
    refused = (runtime or runtime_of(request)).rate_limiter.blocked(_invalid_credential_key(request))
    if refused is not None:
        raise rate_limited(refused, "Too many invalid credentials")


def count_invalid_credential(request: Request) -> None:
    """Charge a rejected credential to the caller's address (429 once the address has used up
    ``invalid_credential_limit_per_address``)."""
    limit = runtime_of(request).settings.invalid_credential_limit_per_address
    check_limits(request, [(_invalid_credential_key(request), limit)], "Too many invalid credentials")


def authenticate_request(request: Request) -> Principal:
    """Authenticate and rate-limit one request; raises ApiError 401/429."""
    credential = _credential(request)
    if credential is None:
        raise _unauthorized("Authentication credentials were not provided.")
    runtime = runtime_of(request)
    refuse_blocked_address(request, runtime)
    scheme, token = credential
    try:
        if scheme == "bearer":
            principal, limit = runtime.accounts.authenticate_access_token(token)
        else:
            principal, limit = runtime.accounts.authenticate_api_key(token)
    except AuthError as err:
        count_invalid_credential(request)
        raise _unauthorized(str(err), err.code, "Bearer" if scheme == "bearer" else "ApiKey") from None
    request.scope.setdefault("state", {})[TENANT_STATE_KEY] = principal.tenant_id
    if limit is not None:
        decision = runtime.rate_limiter.hit(("tenant", principal.tenant_id), limit)
        if not decision.allowed:
            raise rate_limited(decision, f"Rate limit of {limit} requests per minute exceeded")
        request.scope.setdefault("state", {})[RATE_LIMIT_STATE_KEY] = decision.headers()
    return principal


async def authenticated(request: Request) -> Principal:
    """Dependency: the calling Principal; 401 if credentials are missing or invalid, 429 over the limit."""
    return authenticate_request(request)


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the Principal if it holds every scope, else 403 ``missing_scope`` naming it."""
    unknown = set(scopes) - ALL_SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")

    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        for scope in scopes:
            if scope not in principal.scopes:
                raise ApiError(403, f"This credential lacks the '{scope}' scope.", "missing_scope",
                               {"scope": [scope]})
        if "sends:write" in scopes and not principal.allow_sends:
            raise ApiError(403, "This credential is not allowed to send (allow_sends is false).",
                           "sends_not_allowed", {"allow_sends": ["false"]})
        return principal

    return dependency


def tenant_scoped_404(kind: str = "resource", resource_id: object = None) -> ApiError:
    """The answer for a missing id and for another tenant's id alike (existence is not revealed)."""
    suffix = f" {resource_id}" if resource_id is not None else ""
    return ApiError(404, f"No {kind}{suffix}.", "not_found")




def check_id(kind: str, value: int) -> int:
    """Ids beyond SQLite's range cannot exist (and would not bind): answer 404 like any missing id."""
    if not valid_id(value):
        raise tenant_scoped_404(kind, value)
    return value


def id_param(kind: str, name: str) -> Callable[..., Awaitable[int]]:
    """Dependency: the path parameter ``name`` (an id of ``kind``), 404 when out of range (``check_id``).
    Its one parameter is named ``name``, as in a hand-written ``def f(segment_id: int)``: FastAPI reads
    the path parameter of that name, and route introspection (OpenAPI, tests) sees it."""
    async def dependency(**path: int) -> int:
        return check_id(kind, path[name])

    dependency.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=int)])
    return dependency


def check_body_tenant(principal: Principal, tenant: object) -> None:
    """A body's ``tenant`` field: absent or the caller's own tenant is fine; any other value -> 404."""
    if tenant is None:
        return
    if isinstance(tenant, bool) or str(tenant) != str(principal.tenant_id):
        raise tenant_scoped_404("tenant", tenant)


class RateLimitHeadersMiddleware:
    """Adds the rate-limit headers that ``authenticate_request`` left in the request scope to the
    response (pure ASGI, so it also covers streamed and file responses and costs one dict lookup)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = state.get(RATE_LIMIT_STATE_KEY)
                if headers:
                    message["headers"] = [*message.get("headers", ()),
                                          *((k.lower().encode(), v.encode()) for k, v in headers.items())]
            await send(message)

        await self.app(scope, receive, send_with_headers)
