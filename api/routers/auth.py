"""JWT login and refresh (seed: segops-api-overview, "Obtaining a JWT"), and who-am-I."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.deps import (
    Principal,
    authenticated,
    check_limits,
    client_address,
    count_invalid_credential,
    refuse_blocked_address,
    runtime_of,
)
from engine.accounts import AuthError

router = APIRouter(prefix="/api/auth", tags=["auth"])
MAX_EMAIL = 254  # longer is no valid address; the limiter's key stays small whatever is sent


class TokenRequest(BaseModel):
    email: str
    password: str


class RefreshRequest(BaseModel):
    refresh: str


class TokenPair(BaseModel):
    access: str
    refresh: str


@router.post("/token/", response_model=TokenPair)
def obtain_token(body: TokenRequest, request: Request) -> dict[str, str]:
    """Sync on purpose: argon2 verification runs in the threadpool, not on the event loop.

    Attempts are limited per client address, per email and in all (settings ``login_limit_*``), checked
    in that order, before any password is hashed: one address cannot spray emails, many addresses cannot
    wear one account down, and no crowd can make argon2 take the whole CPU."""
    settings = runtime_of(request).settings
    check_limits(request, [(("login-address", client_address(request)), settings.login_limit_per_address),
                           (("login-email", body.email.strip().lower()[:MAX_EMAIL]), settings.login_limit_per_email),
                           (("login",), settings.login_limit_global)], "Too many login attempts")
    return runtime_of(request).accounts.login(body.email, body.password)


@router.post("/token/refresh/", response_model=TokenPair)
def refresh_token(body: RefreshRequest, request: Request) -> dict[str, str]:
    """A refresh token is a credential: rejected ones count against the address like bad API keys."""
    refuse_blocked_address(request)
    try:
        return runtime_of(request).accounts.refresh(body.refresh)
    except AuthError:
        count_invalid_credential(request)
        raise


@router.get("/me/")
async def whoami(principal: Principal = Depends(authenticated)) -> dict:
    """The caller as the API sees it: tenant, role, scopes, plan."""
    return {"tenant_id": principal.tenant_id, "user_id": principal.user_id, "api_key_id": principal.api_key_id,
            "role": principal.role, "scopes": sorted(principal.scopes), "allow_sends": principal.allow_sends,
            "plan": principal.plan}
