"""JWT login, refresh rotation with family revocation, rejection of bad tokens, role scopes."""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

pytest_plugins = ["tests.api_fixtures"]

# The scope list of the task brief, written out independently of engine.accounts.
SPEC_SCOPES = {
    "segments:read", "segments:write", "events:write", "membership:read", "exports:read", "profiles:read",
    "profiles:write", "templates:read", "templates:write", "assets:read", "assets:write", "brand_kits:read",
    "brand_kits:write", "journeys:read", "journeys:write", "broadcasts:read", "broadcasts:write",
    "sends:write", "keys:write",
}


def login(client, email, password):
    return client.post("/api/auth/token/", json={"email": email, "password": password})


def me(client, token):
    return client.get("/api/auth/me/", headers={"Authorization": f"Bearer {token}"})


def assert_401(response, code=None):
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith(("Bearer", "ApiKey"))
    body = response.json()
    assert body["detail"]
    if code:
        assert body["code"] == code


def test_login_returns_pair_and_access_identifies_user(client, tenant_a):
    r = login(client, tenant_a.email, tenant_a.password)
    assert r.status_code == 200
    pair = r.json()
    assert set(pair) == {"access", "refresh"}
    who = me(client, pair["access"])
    assert who.status_code == 200
    assert who.json() | {"scopes": None} == {
        "tenant_id": tenant_a.tenant_id, "user_id": tenant_a.user_id, "api_key_id": None, "role": "admin",
        "scopes": None, "allow_sends": True, "plan": "enterprise"}
    assert set(who.json()["scopes"]) == SPEC_SCOPES


def test_login_is_case_insensitive_on_email(client, tenant_a):
    assert login(client, tenant_a.email.upper(), tenant_a.password).status_code == 200


def test_access_token_claims(client, runtime, tenant_a):
    access = login(client, tenant_a.email, tenant_a.password).json()["access"]
    assert jwt.get_unverified_header(access)["alg"] == "HS256"
    claims = jwt.decode(access, runtime.settings.secret_key, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60 * 60
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["typ"] == "access" and claims["jti"] and claims["sub"] == str(tenant_a.user_id)
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60


@pytest.mark.parametrize("email,password", [
    ("admin@a.test", "wrong-password"), ("nobody@a.test", "correct-horse-battery"), ("", ""),
])
def test_bad_credentials_are_401(client, email, password):
    assert_401(login(client, email, password), "invalid_credentials")


def test_refresh_rotates_and_reuse_revokes_the_family(client, tenant_a):
    first = login(client, tenant_a.email, tenant_a.password).json()
    other_session = login(client, tenant_a.email, tenant_a.password).json()

    second = client.post("/api/auth/token/refresh/", json={"refresh": first["refresh"]})
    assert second.status_code == 200
    second = second.json()
    assert second["refresh"] != first["refresh"] and second["access"] != first["access"]
    assert me(client, second["access"]).status_code == 200

    third = client.post("/api/auth/token/refresh/", json={"refresh": second["refresh"]}).json()

    # first refresh token was already rotated: replaying it is theft -> the family dies
    assert_401(client.post("/api/auth/token/refresh/", json={"refresh": first["refresh"]}), "token_reused")
    assert_401(client.post("/api/auth/token/refresh/", json={"refresh": third["refresh"]}), "token_revoked")
    assert_401(client.post("/api/auth/token/refresh/", json={"refresh": second["refresh"]}))
    # another login is another family, untouched
    assert client.post("/api/auth/token/refresh/", json={"refresh": other_session["refresh"]}).status_code == 200


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id, typ="access", **delta):
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "typ": typ, "iat": now, "nbf": now, "exp": now + timedelta(minutes=5),
              "jti": "j1"}
    for name, value in delta.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = now + value if isinstance(value, timedelta) else value
    return claims


BAD_TOKENS = {
    "alg_none": lambda s, u: _b64({"alg": "none", "typ": "JWT"}) + "."
    + _b64({k: (int(v.timestamp()) if isinstance(v, datetime) else v) for k, v in _claims(u).items()}) + ".",
    "expired": lambda s, u: jwt.encode(_claims(u, iat=timedelta(hours=-2), nbf=timedelta(hours=-2),
                                               exp=timedelta(seconds=-5)), s, "HS256"),
    "not_yet_valid": lambda s, u: jwt.encode(_claims(u, nbf=timedelta(hours=1), exp=timedelta(hours=2)), s, "HS256"),
    "tampered_payload": lambda s, u: _tamper(jwt.encode(_claims(u), s, "HS256"), str(u + 1)),
    "wrong_secret": lambda s, u: jwt.encode(_claims(u), s + "x", "HS256"),
    "other_hmac_alg": lambda s, u: jwt.encode(_claims(u), s, "HS512"),
    "refresh_typ_as_access": lambda s, u: jwt.encode(_claims(u, typ="refresh"), s, "HS256"),
    "no_typ": lambda s, u: jwt.encode(_claims(u, typ=None), s, "HS256"),
    "no_exp": lambda s, u: jwt.encode(_claims(u, exp=None), s, "HS256"),
    "no_iat": lambda s, u: jwt.encode(_claims(u, iat=None), s, "HS256"),
    "unknown_user": lambda s, u: jwt.encode(_claims(987654), s, "HS256"),
    "garbage": lambda s, u: "not.a.jwt",
}
# Signed with the right secret but shaped unlike any token we issue: claim values of odd types and sizes.
ODD_CLAIMS = {
    "sub_2**70": {"sub": str(2**70)}, "sub_int": {"sub": 5}, "sub_float": {"sub": "1.0"}, "sub_negative": {"sub": "-1"},
    "sub_zero": {"sub": "0"}, "sub_4300_digits": {"sub": "9" * 4300}, "sub_unicode_digits": {"sub": "\u0661"},
    "sub_surrogate": {"sub": "\ud800"}, "sub_list": {"sub": [1]},
    "exp_huge": {"exp": 2**70}, "exp_years_ahead": {"exp": timedelta(days=3650)}, "exp_infinite": {"exp": float("inf")},
    "exp_nan": {"exp": float("nan")}, "nbf_list": {"nbf": []}, "iat_far_future": {"iat": timedelta(days=3650)},
    "iat_huge": {"iat": 2**70}, "jti_list": {"jti": ["j"]}, "jti_int": {"jti": 2**70},
    "jti_surrogate": {"jti": "\ud800"}, "jti_long": {"jti": "j" * 5000}, "typ_dict": {"typ": {"a": 1}},
}
for _name, _delta in ODD_CLAIMS.items():
    BAD_TOKENS[_name] = lambda s, u, delta=_delta: jwt.encode(_claims(u, **{"typ": "access", **delta}), s, "HS256")


SPECIFIC_CODES = {"expired": "token_expired", "not_yet_valid": "token_not_yet_valid",
                  "refresh_typ_as_access": "wrong_token_type", "unknown_user": "user_inactive",
                  "iat_far_future": "token_not_yet_valid", "iat_huge": "token_not_yet_valid",
                  "typ_dict": "wrong_token_type"}


def _tamper(token: str, new_sub: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sub"] = new_sub
    return ".".join([header, _b64(data), signature])


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_access_tokens_are_401(client, runtime, tenant_a, case):
    token = BAD_TOKENS[case](runtime.settings.secret_key, tenant_a.user_id)
    assert_401(me(client, token), SPECIFIC_CODES.get(case, "invalid_token"))


@pytest.mark.parametrize("case", sorted(ODD_CLAIMS))
def test_refresh_tokens_with_odd_claims_are_401(client, runtime, tenant_a, case):
    claims = _claims(tenant_a.user_id, **{"typ": "refresh", **ODD_CLAIMS[case]})
    token = jwt.encode(claims, runtime.settings.secret_key, "HS256")
    r = client.post("/api/auth/token/refresh/", json={"refresh": token})
    assert_401(r)


@pytest.mark.parametrize("path,body,field", [
    ("/api/auth/token/", {"email": "\ud800@a.test", "password": "correct-horse-battery"}, "email"),
    ("/api/auth/token/", {"email": "admin@a.test", "password": "x\udfffy"}, "password"),
    ("/api/auth/token/refresh/", {"refresh": "\ud800"}, "refresh"),
])
def test_unpaired_surrogates_in_auth_bodies_are_400_naming_the_field(client, path, body, field):
    r = client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_unicode" and field in r.json()


def test_well_formed_token_built_like_the_bad_ones_is_accepted(client, runtime, tenant_a):
    """Guards the table above: only the one defect makes each of those tokens fail."""
    token = jwt.encode(_claims(tenant_a.user_id), runtime.settings.secret_key, "HS256")
    assert me(client, token).status_code == 200


def test_access_token_is_not_a_refresh_token(client, tenant_a):
    pair = login(client, tenant_a.email, tenant_a.password).json()
    assert_401(client.post("/api/auth/token/refresh/", json={"refresh": pair["access"]}), "wrong_token_type")


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Token xyz", "Bearer "])
def test_malformed_authorization_header_is_401(client, header):
    assert_401(client.get("/api/auth/me/", headers={"Authorization": header}))


def test_no_credentials_is_401(client):
    assert_401(client.get("/api/auth/me/"), "not_authenticated")


@pytest.mark.parametrize("role,expected", [
    ("viewer", {s for s in SPEC_SCOPES if s.endswith(":read")}),
    ("editor", SPEC_SCOPES - {"keys:write"}),
    ("admin", SPEC_SCOPES),
])
def test_role_scopes(client, tenant_a, role, expected):
    body = client.get("/api/auth/me/", headers=tenant_a.jwt_headers(role)).json()
    assert body["role"] == role
    assert set(body["scopes"]) == expected
    assert body["allow_sends"] is (role != "viewer")


@pytest.mark.parametrize("role,status", [("viewer", 403), ("editor", 403), ("admin", 200)])
def test_only_admin_manages_keys(client, tenant_a, role, status):
    r = client.get("/api/keys/", headers=tenant_a.jwt_headers(role))
    assert r.status_code == status
    if status == 403:
        assert r.json()["code"] == "missing_scope" and "keys:write" in r.json()["detail"]


def test_a_role_change_applies_after_cache_invalidation(client, runtime, tenant_a):
    headers = tenant_a.jwt_headers("viewer")
    assert client.get("/api/keys/", headers=headers).status_code == 403
    runtime.meta.execute("UPDATE users SET role = 'admin' WHERE id = ?", (tenant_a.user_ids["viewer"],))
    runtime.accounts.invalidate()
    assert client.get("/api/keys/", headers=headers).status_code == 200
