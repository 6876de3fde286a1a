"""Tenants, users, roles, API keys and refresh-token families: who may call the API, as which tenant.

Why it looks like this:
  * API keys are high-entropy (256 bits from ``secrets``), so a single SHA-256 of the full key is a
    sound verifier and costs a microsecond; argon2 is kept for human passwords only. The key path
    (thousands of membership lookups per second) is a dict hit: key hash -> Principal, cached in
    process for ``CACHE_TTL`` seconds and dropped at once on revoke in this process.
  * Access JWTs are HS256-only (the algorithm is pinned on decode) and short-lived. Refresh tokens
    rotate: each refresh marks its token used and issues the next one in the same family; presenting
    a used token again means it leaked, so the whole family is revoked.
  * Email is unique across tenants: login is by email and password alone, the tenant follows.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.ids import valid_id
from common.time import iso_seconds, utc_now
from engine.errors import Conflict, DomainError, InvalidInput, NotAuthenticated, NotFound
from storage.objectstore import write_private

if TYPE_CHECKING:
    from storage.metadata import MetadataStore

SCOPES: tuple[str, ...] = (
    "segments:read", "segments:write", "events:write", "membership:read", "exports:read",
    "profiles:read", "profiles:write", "templates:read", "templates:write", "assets:read", "assets:write",
    "brand_kits:read", "brand_kits:write", "journeys:read", "journeys:write", "broadcasts:read",
    "broadcasts:write", "sends:write", "keys:write",
)
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset(s for s in SCOPES if s.endswith(":read")),
    "editor": ALL_SCOPES - {"keys:write"},
    "admin": ALL_SCOPES,
}
ROLES = tuple(ROLE_SCOPES)
# API calls per minute per tenant; None = unlimited. A tenant's own rate_limit_per_minute overrides.
PLAN_LIMITS: dict[str, int | None] = {"free": 60, "starter": 300, "business": 1000, "enterprise": None}
PLANS = tuple(PLAN_LIMITS)

ACCESS_TTL = timedelta(minutes=60)
REFRESH_TTL = timedelta(days=14)
TOKEN_TTLS = {"access": ACCESS_TTL, "refresh": REFRESH_TTL}
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")  # a token's sub, as _encode writes it
_JTI = re.compile(r"[A-Za-z0-9_-]{1,64}")  # secrets.token_urlsafe
CACHE_TTL = 30.0  # seconds a cached credential may outlive a change made by another process
KEY_PREFIX = "sk_live_"
KEY_DISPLAY_CHARS = len(KEY_PREFIX) + 6  # non-secret prefix kept for listing
DEMO_EMAIL = "demo@segops.local"
DEMO_CREDENTIALS_FILE = "demo-credentials.json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'free',
    rate_limit_per_minute INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    allow_sends INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);
CREATE TABLE IF NOT EXISTS refresh_families (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES refresh_families(id),
    expires_at TEXT NOT NULL,
    used_at TEXT
);
"""


@dataclass(frozen=True)
class Principal:
    """The caller of one request. ``api.deps`` re-exports it; routers receive it from ``require``."""
    tenant_id: int
    user_id: int | None      # set for JWT (human user)
    api_key_id: int | None   # set for API key
    role: str                # "admin" | "editor" | "viewer" | "service" (an API key)
    scopes: frozenset[str]
    allow_sends: bool
    plan: str                # "free" | "starter" | "business" | "enterprise"


class AuthError(NotAuthenticated):
    """A credential was rejected."""

    def __init__(self, message: str, code: str = "invalid_token"):
        super().__init__(message, code=code)


class AccountError(InvalidInput):
    """Bad input to an account operation; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, code: str = "invalid"):
        super().__init__(message, code=code, field=field)


class AccountConflict(Conflict, AccountError):
    """An account operation that conflicts with an existing one (an email already taken)."""


class TenantNotFound(NotFound, AccountError):
    def __init__(self, tenant_id: int):
        DomainError.__init__(self, f"no tenant {tenant_id}", code="not_found", field="tenant")
        self.kind, self.ident = "tenant", tenant_id


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_scopes(scopes: Any, field: str = "scopes") -> frozenset[str]:
    if not isinstance(scopes, (list, tuple, set, frozenset)) or not scopes:
        raise AccountError(field, "give at least one scope", "invalid_scopes")
    for i, scope in enumerate(scopes):
        if scope not in ALL_SCOPES:
            raise AccountError(f"{field}[{i}]", f"unknown scope {scope!r}", "invalid_scope")
    return frozenset(scopes)


def _rate_limit(plan: str, override: int | None) -> int | None:
    return override if override is not None else PLAN_LIMITS[plan]


class Accounts:
    """The accounts service of one Runtime (``runtime.accounts``)."""

    def __init__(self, meta: MetadataStore, secret: str | None = None, *, secret_loader=None):
        self.meta = meta
        meta.ensure_schema("accounts", SCHEMA)
        self._secret = secret
        self._secret_loader = secret_loader
        self._hasher = PasswordHasher()
        # key hash / user id -> (expires at (monotonic), Principal, limit per minute or None)
        self._key_cache: dict[str, tuple[float, Principal, int | None]] = {}
        self._user_cache: dict[int, tuple[float, Principal, int | None]] = {}

    @cached_property
    def secret(self) -> str:
        return self._secret or self._secret_loader()

    # ---- tenants -------------------------------------------------------------------------------
    def create_tenant(self, name: str, plan: str = "free", rate_limit_per_minute: int | None = None) -> int:
        if not name or not name.strip():
            raise AccountError("name", "must not be empty")
        self._check_plan(plan, rate_limit_per_minute)
        cur = self.meta.execute(
            "INSERT INTO tenants (name, plan, rate_limit_per_minute, created_at) VALUES (?, ?, ?, ?)",
            (name.strip(), plan, rate_limit_per_minute, iso_seconds(utc_now())))
        return int(cur.lastrowid)

    def get_tenant(self, tenant_id: int) -> dict | None:
        row = self.meta.query_one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        return dict(row) if row else None

    def set_plan(self, tenant_id: int, plan: str, rate_limit_per_minute: int | None = None) -> None:
        """Change a tenant's plan (and optional per-minute limit override; None = the plan's)."""
        self._check_plan(plan, rate_limit_per_minute)
        cur = self.meta.execute("UPDATE tenants SET plan = ?, rate_limit_per_minute = ? WHERE id = ?",
                                (plan, rate_limit_per_minute, tenant_id))
        if cur.rowcount == 0:
            raise TenantNotFound(tenant_id)
        self.invalidate()

    @staticmethod
    def _check_plan(plan: str, rate_limit_per_minute: int | None) -> None:
        if plan not in PLAN_LIMITS:
            raise AccountError("plan", f"must be one of {', '.join(PLANS)}", "invalid_plan")
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise AccountError("rate_limit_per_minute", "must be at least 1", "invalid_rate_limit")

    def _require_tenant(self, tenant_id: int) -> None:
        if self.meta.query_one("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)) is None:
            raise TenantNotFound(tenant_id)

    # ---- users ---------------------------------------------------------------------------------
    def create_user(self, tenant_id: int, email: str, password: str, role: str = "viewer") -> int:
        email = self._check_email(email)
        if role not in ROLE_SCOPES:
            raise AccountError("role", f"must be one of {', '.join(ROLES)}", "invalid_role")
        self._check_password(password)
        self._require_tenant(tenant_id)
        password_hash = self._hasher.hash(password)
        with self.meta.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
                raise AccountConflict("email", "a user with this email exists", "email_taken")
            cur = conn.execute(
                "INSERT INTO users (tenant_id, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant_id, email, password_hash, role, iso_seconds(utc_now())))
        return int(cur.lastrowid)

    def set_password(self, user_id: int, password: str) -> None:
        self._check_password(password)
        self.meta.execute("UPDATE users SET password_hash = ? WHERE id = ?", (self._hasher.hash(password), user_id))

    def user_by_email(self, email: str) -> dict | None:
        row = self.meta.query_one("SELECT * FROM users WHERE email = ?", (email.strip().lower(),))
        return dict(row) if row else None

    @staticmethod
    def _check_email(email: str) -> str:
        email = (email or "").strip().lower()
        local, at, domain = email.partition("@")
        if not (local and at and domain) or any(c.isspace() for c in email) or len(email) > 254:
            raise AccountError("email", "not a valid email address", "invalid_email")
        return email

    @staticmethod
    def _check_password(password: str) -> None:
        if not password or len(password) < 8:
            raise AccountError("password", "must be at least 8 characters", "weak_password")

    # ---- API keys ------------------------------------------------------------------------------
    def create_api_key(self, tenant_id: int, name: str, scopes, allow_sends: bool = False) -> tuple[dict, str]:
        """Mint a key; returns (its listing, the plaintext key). The plaintext is never stored."""
        if not name or not name.strip():
            raise AccountError("name", "must not be empty")
        scope_set = validate_scopes(list(scopes))
        self._require_tenant(tenant_id)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        ordered = [s for s in SCOPES if s in scope_set]
        cur = self.meta.execute(
            "INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes, allow_sends, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, name.strip(), key[:KEY_DISPLAY_CHARS], hash_api_key(key), " ".join(ordered),
             int(bool(allow_sends)), iso_seconds(utc_now())))
        return self.get_api_key(tenant_id, int(cur.lastrowid)), key

    def list_api_keys(self, tenant_id: int, limit: int = 1000, offset: int = 0) -> tuple[int, list[dict]]:
        count, rows = self.meta.page("api_keys WHERE tenant_id = ?", (tenant_id,), "id", limit, offset)
        return count, [self._key_listing(r) for r in rows]

    def get_api_key(self, tenant_id: int, key_id: int) -> dict | None:
        row = self.meta.query_one("SELECT * FROM api_keys WHERE id = ? AND tenant_id = ?", (key_id, tenant_id))
        return self._key_listing(row) if row else None

    def revoke_api_key(self, tenant_id: int, key_id: int) -> bool:
        """Revoke a key of this tenant (idempotent); False if the tenant has no such key."""
        row = self.meta.query_one("SELECT key_hash FROM api_keys WHERE id = ? AND tenant_id = ?",
                                  (key_id, tenant_id))
        if row is None:
            return False
        self.meta.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                          (iso_seconds(utc_now()), key_id))
        self._key_cache.pop(row["key_hash"], None)
        return True

    @staticmethod
    def _key_listing(row) -> dict:
        return {"id": row["id"], "tenant_id": row["tenant_id"], "name": row["name"], "prefix": row["prefix"],
                "scopes": row["scopes"].split(), "allow_sends": bool(row["allow_sends"]),
                "created_at": row["created_at"], "revoked_at": row["revoked_at"],
                "active": row["revoked_at"] is None}

    def authenticate_api_key(self, key: str) -> tuple[Principal, int | None]:
        """(Principal, per-minute limit or None) for a live key; AuthError otherwise. No argon2 here."""
        key_hash = hash_api_key(key)
        hit = self._key_cache.get(key_hash)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        row = self.meta.query_one(
            "SELECT k.id, k.tenant_id, k.scopes, k.allow_sends, k.revoked_at, t.plan, t.rate_limit_per_minute "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ?", (key_hash,))
        if row is None or row["revoked_at"] is not None:
            self._key_cache.pop(key_hash, None)
            raise AuthError("Invalid or revoked API key.", "invalid_api_key")
        principal = Principal(tenant_id=row["tenant_id"], user_id=None, api_key_id=row["id"], role="service",
                              scopes=frozenset(row["scopes"].split()), allow_sends=bool(row["allow_sends"]),
                              plan=row["plan"])
        limit = _rate_limit(row["plan"], row["rate_limit_per_minute"])
        self._key_cache[key_hash] = (now + CACHE_TTL, principal, limit)
        return principal, limit

    def invalidate(self) -> None:
        """Forget every cached credential (after a plan, role or key change)."""
        self._key_cache.clear()
        self._user_cache.clear()

    # ---- JWTs ----------------------------------------------------------------------------------
    def login(self, email: str, password: str) -> dict[str, str]:
        """{access, refresh} for valid credentials; AuthError otherwise (same answer for both causes)."""
        user = self.user_by_email(email or "")
        stored = user["password_hash"] if user else self._dummy_hash
        try:
            self._hasher.verify(stored, password or "")
            valid = user is not None and bool(user["is_active"])
        except (VerificationError, InvalidHashError):
            valid = False
        if not valid:
            raise AuthError("No active account found with the given credentials.", "invalid_credentials")
        if self._hasher.check_needs_rehash(user["password_hash"]):
            self.meta.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                              (self._hasher.hash(password), user["id"]))
        return self.issue_tokens(user["id"])

    @cached_property
    def _dummy_hash(self) -> str:
        """Verified against when the email is unknown, so timing does not reveal which emails exist."""
        return self._hasher.hash(secrets.token_urlsafe(16))

    def issue_tokens(self, user_id: int) -> dict[str, str]:
        """A fresh {access, refresh} pair starting a new refresh family."""
        family = secrets.token_urlsafe(16)
        with self.meta.transaction() as conn:
            conn.execute("INSERT INTO refresh_families (id, user_id, created_at) VALUES (?, ?, ?)",
                         (family, user_id, iso_seconds(utc_now())))
            refresh = self._new_refresh(conn, family, user_id)
        return {"access": self.access_token(user_id), "refresh": refresh}

    def access_token(self, user_id: int, *, ttl: timedelta = ACCESS_TTL) -> str:
        return self._encode(user_id, "access", ttl)[0]

    def _encode(self, user_id: int, typ: str, ttl: timedelta) -> tuple[str, str, datetime]:
        now = utc_now()
        jti = secrets.token_urlsafe(16)
        claims = {"sub": str(user_id), "typ": typ, "iat": now, "nbf": now, "exp": now + ttl, "jti": jti}
        return jwt.encode(claims, self.secret, algorithm="HS256"), jti, now + ttl

    def _new_refresh(self, conn, family: str, user_id: int) -> str:
        token, jti, expires = self._encode(user_id, "refresh", REFRESH_TTL)
        conn.execute("INSERT INTO refresh_tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
                     (jti, family, iso_seconds(expires)))
        return token

    def _decode(self, token: str, typ: str) -> dict:
        """The claims of a token we issued, or AuthError. The signature is not the only check: a token signed
        with our secret but shaped unlike ours (a ``sub`` that is no user id, an ``exp`` beyond its type's
        lifetime, a ``jti`` that is not a string, a claim PyJWT cannot convert) is invalid, never a 500."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"],
                                options={"require": ["exp", "iat", "nbf", "sub", "typ", "jti"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("Token has expired.", "token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("Token is not yet valid.", "token_not_yet_valid") from None
        except (jwt.InvalidTokenError, TypeError, ValueError, OverflowError):  # e.g. "nbf": [] or "exp": 1e999
            raise AuthError("Token is invalid.", "invalid_token") from None
        if claims.get("typ") != typ:
            raise AuthError(f"Token is not an {typ} token.", "wrong_token_type")
        sub, jti = claims["sub"], claims["jti"]
        user_id = int(sub) if isinstance(sub, str) and _USER_ID.fullmatch(sub) else 0
        if (not valid_id(user_id) or not (isinstance(jti, str) and _JTI.fullmatch(jti))
                or int(claims["exp"]) - int(claims["iat"]) > TOKEN_TTLS[typ].total_seconds() + 1):
            raise AuthError("Token is invalid.", "invalid_token")
        claims["user_id"] = user_id
        return claims

    def refresh(self, refresh_token: str) -> dict[str, str]:
        """Rotate: a new {access, refresh} pair. Reusing a rotated token revokes its whole family."""
        claims = self._decode(refresh_token, "refresh")
        reused = False
        with self.meta.transaction() as conn:
            row = conn.execute(
                "SELECT t.used_at, f.id AS family, f.user_id, f.revoked_at, u.is_active "
                "FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id "
                "JOIN users u ON u.id = f.user_id WHERE t.jti = ?", (claims["jti"],)).fetchone()
            if row is None or row["user_id"] != claims["user_id"]:
                raise AuthError("Refresh token is invalid.", "invalid_token")
            if row["revoked_at"] is not None or not row["is_active"]:
                raise AuthError("Refresh token has been revoked.", "token_revoked")
            if row["used_at"] is not None:
                conn.execute("UPDATE refresh_families SET revoked_at = ? WHERE id = ?",
                             (iso_seconds(utc_now()), row["family"]))
                reused = True
            else:
                conn.execute("UPDATE refresh_tokens SET used_at = ? WHERE jti = ?",
                             (iso_seconds(utc_now()), claims["jti"]))
                refresh = self._new_refresh(conn, row["family"], row["user_id"])
        if reused:  # raised after COMMIT so the family stays revoked
            raise AuthError("Refresh token was already used; its session has been revoked.", "token_reused")
        return {"access": self.access_token(row["user_id"]), "refresh": refresh}

    def authenticate_access_token(self, token: str) -> tuple[Principal, int | None]:
        user_id = self._decode(token, "access")["user_id"]
        hit = self._user_cache.get(user_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        row = self.meta.query_one(
            "SELECT u.tenant_id, u.role, u.is_active, t.plan, t.rate_limit_per_minute "
            "FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.id = ?", (user_id,))
        if row is None or not row["is_active"]:
            raise AuthError("User is inactive or deleted.", "user_inactive")
        role = row["role"]
        principal = Principal(tenant_id=row["tenant_id"], user_id=user_id, api_key_id=None, role=role,
                              scopes=ROLE_SCOPES[role], allow_sends=role in ("admin", "editor"), plan=row["plan"])
        limit = _rate_limit(row["plan"], row["rate_limit_per_minute"])
        self._user_cache[user_id] = (now + CACHE_TTL, principal, limit)
        return principal, limit


def bootstrap_demo(accounts: Accounts, data_dir: Path) -> tuple[int, str, str, str]:
    """Idempotently create the demo tenant (enterprise), admin ``demo@segops.local`` and a full-scope
    key with allow_sends; returns (tenant_id, api_key_plaintext, email, password).

    A key is shown only once, so for the demo tenant alone the plaintext key and password are kept in
    ``<data>/demo-credentials.json`` (mode 0600) for ``make serve`` to print on every start. If that
    file is lost or its key revoked, a new key (and password) is minted and the file rewritten.
    """
    path = Path(data_dir) / DEMO_CREDENTIALS_FILE
    saved: dict = orjson.loads(path.read_bytes()) if path.exists() else {}
    user = accounts.user_by_email(DEMO_EMAIL)
    if user is None:
        tenant_id = accounts.create_tenant("Demo", plan="enterprise")
        password = secrets.token_urlsafe(12)
        accounts.create_user(tenant_id, DEMO_EMAIL, password, "admin")
    else:
        tenant_id = user["tenant_id"]
        password = saved.get("password")
        if saved.get("tenant_id") != tenant_id or not password:
            password = secrets.token_urlsafe(12)
            accounts.set_password(user["id"], password)
    key = saved.get("api_key") if saved.get("tenant_id") == tenant_id else None
    try:
        if key is None or accounts.authenticate_api_key(key)[0].tenant_id != tenant_id:
            key = None
    except AuthError:
        key = None
    if key is None:
        key = accounts.create_api_key(tenant_id, "demo", SCOPES, allow_sends=True)[1]
    creds = {"tenant_id": tenant_id, "api_key": key, "email": DEMO_EMAIL, "password": password}
    if creds != saved:
        write_private(path, orjson.dumps(creds, option=orjson.OPT_INDENT_2))
    return tenant_id, key, DEMO_EMAIL, password
