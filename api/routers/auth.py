"""JWT login and refresh (seed: segops-api-overview, "Obtaining a JWT"), and who-am-I."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.deps import Principal, authenticated, runtime_of
from api.errors import ApiError
from engine.accounts import AuthError

router = APIRouter(tags=["auth"])

# Password guesses allowed per email per minute (argon2 already makes each guess cost ~0.1 s).
LOGIN_ATTEMPTS_PER_MINUTE = 20


class TokenRequest(BaseModel):
    email: str
    password: str


class RefreshRequest(BaseModel):
    refresh: str


class TokenPair(BaseModel):
    access: str
    refresh: str


def _unauthorized(err: AuthError) -> ApiError:
    return ApiError(401, str(err), err.code, headers={"WWW-Authenticate": 'Bearer realm="segops"'})


@router.post("/api/auth/token/", response_model=TokenPair)
def obtain_token(body: TokenRequest, request: Request) -> dict[str, str]:
    """Sync on purpose: argon2 verification runs in the threadpool, not on the event loop."""
    runtime = runtime_of(request)
    decision = runtime.rate_limiter.hit(("login", body.email.strip().lower()), LOGIN_ATTEMPTS_PER_MINUTE)
    if not decision.allowed:
        raise ApiError(429, f"Too many login attempts; retry in {decision.retry_after} s.", "rate_limited",
                       headers=decision.headers())
    try:
        return runtime.accounts.login(body.email, body.password)
    except AuthError as err:
        raise _unauthorized(err) from None


@router.post("/api/auth/token/refresh/", response_model=TokenPair)
def refresh_token(body: RefreshRequest, request: Request) -> dict[str, str]:
    try:
        return runtime_of(request).accounts.refresh(body.refresh)
    except AuthError as err:
        raise _unauthorized(err) from None


@router.get("/api/auth/me/")
async def whoami(principal: Principal = Depends(authenticated)) -> dict:
    """The caller as the API sees it: tenant, role, scopes, plan."""
    return {"tenant_id": principal.tenant_id, "user_id": principal.user_id, "api_key_id": principal.api_key_id,
            "role": principal.role, "scopes": sorted(principal.scopes), "allow_sends": principal.allow_sends,
            "plan": principal.plan}
