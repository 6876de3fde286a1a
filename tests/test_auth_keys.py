"""API keys: both headers, hashed storage, scopes, sends gating, CRUD, tenant isolation, CLI."""
from __future__ import annotations

import hashlib
import json

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.deps import Principal, require
from cli import app as cli
from engine.runtime import Runtime
from engine.settings import Settings

pytest_plugins = ["tests.api_fixtures"]


def me(client, headers):
    return client.get("/api/auth/me/", headers=headers)


def test_api_key_in_authorization_and_x_api_key_headers(client, tenant_a):
    for headers in ({"Authorization": f"ApiKey {tenant_a.api_key}"}, {"x-api-key": tenant_a.api_key},
                    {"Authorization": f"apikey {tenant_a.api_key}"}):
        r = me(client, headers)
        assert r.status_code == 200, headers
        body = r.json()
        assert (body["tenant_id"], body["api_key_id"], body["user_id"], body["role"]) == \
            (tenant_a.tenant_id, tenant_a.api_key_id, None, "service")
        assert body["allow_sends"] is True


@pytest.mark.parametrize("headers", [
    {"Authorization": "ApiKey sk_live_not-a-real-key"}, {"x-api-key": "sk_live_nope"}, {"x-api-key": ""},
])
def test_unknown_key_is_401(client, headers):
    r = me(client, headers)
    assert r.status_code == 401
    assert "www-authenticate" in r.headers
    assert r.json()["code"] in ("invalid_api_key", "not_authenticated")


def test_create_use_list_revoke_via_api(client, tenant_a):
    admin = tenant_a.jwt_headers()
    r = client.post("/api/keys/", headers=admin,
                    json={"name": "ingest", "scopes": ["events:write", "membership:read"]})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("sk_live_") and len(key) >= 40
    assert created["scopes"] == ["events:write", "membership:read"] and created["allow_sends"] is False
    assert key.startswith(created["prefix"]) and len(created["prefix"]) < len(key) - 30

    who = me(client, {"x-api-key": key}).json()
    assert who["api_key_id"] == created["id"] and set(who["scopes"]) == {"events:write", "membership:read"}

    listing = client.get("/api/keys/", headers=admin)
    assert listing.status_code == 200
    assert key not in listing.text
    rows = {row["id"]: row for row in listing.json()["results"]}
    assert rows[created["id"]]["name"] == "ingest" and rows[created["id"]]["active"] is True
    assert tenant_a.api_key_id in rows
    assert client.get(f"/api/keys/{created['id']}/", headers=admin).json()["prefix"] == created["prefix"]

    assert client.delete(f"/api/keys/{created['id']}/", headers=admin).status_code == 204
    # the key was cached by the call above; revoking in this process drops it at once
    assert me(client, {"x-api-key": key}).status_code == 401
    assert client.delete(f"/api/keys/{created['id']}/", headers=admin).status_code == 204  # idempotent
    assert client.get(f"/api/keys/{created['id']}/", headers=admin).json()["active"] is False


def test_keys_are_stored_hashed(client, runtime, tenant_a):
    r = client.post("/api/keys/", headers=tenant_a.headers, json={"name": "secret", "scopes": ["segments:read"]})
    key = r.json()["key"]
    assert me(client, {"x-api-key": key}).status_code == 200
    db_bytes = b"".join(p.read_bytes() for p in runtime.settings.data_dir.glob("meta.sqlite*"))
    assert hashlib.sha256(key.encode()).hexdigest().encode() in db_bytes  # what is stored instead
    for secret in (key, tenant_a.api_key, key[len(r.json()["prefix"]):]):
        assert secret.encode() not in db_bytes
    assert tenant_a.password.encode() not in db_bytes


def test_missing_scope_is_403_naming_it(client, tenant_a):
    narrow = tenant_a.key_headers("segments:read")
    r = client.get("/api/keys/", headers=narrow)
    assert r.status_code == 403
    body = r.json()
    assert body["code"] == "missing_scope" and "keys:write" in body["detail"] and body["scope"] == ["keys:write"]


def test_a_key_cannot_mint_a_stronger_key(client, tenant_a):
    minter = tenant_a.key_headers("keys:write", "segments:read")
    r = client.post("/api/keys/", headers=minter, json={"name": "x", "scopes": ["segments:read", "sends:write"]})
    assert r.status_code == 403 and r.json()["code"] == "missing_scope" and "sends:write" in r.json()["detail"]
    r = client.post("/api/keys/", headers=minter, json={"name": "x", "scopes": ["segments:read"], "allowSends": True})
    assert r.status_code == 403 and r.json()["code"] == "sends_not_allowed"
    r = client.post("/api/keys/", headers=minter, json={"name": "x", "scopes": ["segments:read"]})
    assert r.status_code == 201


@pytest.mark.parametrize("body,field,code", [
    ({"name": "x", "scopes": ["segments:read", "segments:delete"]}, "scopes[1]", "invalid_scope"),
    ({"name": "x", "scopes": []}, "scopes", "invalid_scopes"),
    ({"name": "", "scopes": ["segments:read"]}, "name", "validation_error"),
    ({"scopes": ["segments:read"]}, "name", "validation_error"),
    ({"name": "x", "scopes": ["segments:read"], "colour": "red"}, "colour", "validation_error"),
    # unpaired UTF-16 surrogates: valid JSON escapes, but not Unicode (refused for every JSON body)
    ({"name": "a\ud800", "scopes": ["segments:read"]}, "name", "invalid_unicode"),
    ({"name": "x", "scopes": ["segments:read", "\udfff"]}, "scopes[1]", "invalid_unicode"),
    ({"name": "x", "scopes": ["segments:read"], "\ud800": 1}, "\ud800", "invalid_unicode"),
])
def test_bad_key_requests_are_400_naming_the_field(client, tenant_a, body, field, code):
    r = client.post("/api/keys/", headers={**tenant_a.headers, "Content-Type": "application/json"},
                    content=json.dumps(body))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code and field in r.json()


def test_tenants_do_not_see_each_others_keys(client, tenant_a, tenant_b):
    a_key = tenant_a.api_key_id
    assert client.get(f"/api/keys/{a_key}/", headers=tenant_b.headers).status_code == 404
    assert client.delete(f"/api/keys/{a_key}/", headers=tenant_b.headers).status_code == 404
    assert client.get("/api/keys/999999/", headers=tenant_b.headers).json()["code"] == "not_found"
    ids = {row["id"] for row in client.get("/api/keys/", headers=tenant_b.headers).json()["results"]}
    assert a_key not in ids and tenant_b.api_key_id in ids
    assert me(client, tenant_a.headers).status_code == 200  # B's delete did not revoke it


def test_body_tenant_must_be_the_callers(client, tenant_a, tenant_b):
    own = client.post("/api/keys/", headers=tenant_b.headers,
                      json={"name": "x", "scopes": ["segments:read"], "tenant": tenant_b.tenant_id})
    assert own.status_code == 201 and own.json()["tenant_id"] == tenant_b.tenant_id
    other = client.post("/api/keys/", headers=tenant_b.headers,
                        json={"name": "x", "scopes": ["segments:read"], "tenant": tenant_a.tenant_id})
    assert other.status_code == 404
    count_a = client.get("/api/keys/", headers=tenant_a.headers).json()["count"]
    assert count_a == 1


def test_sends_write_needs_allow_sends(app, client, tenant_a):
    @app.post("/test-only/redeem/")
    async def redeem(principal: Principal = Depends(require("sends:write"))):
        return {"ok": principal.tenant_id}

    assert client.post("/test-only/redeem/", headers=tenant_a.headers).json() == {"ok": tenant_a.tenant_id}
    denied = client.post("/test-only/redeem/", headers=tenant_a.key_headers("sends:write", allow_sends=False))
    assert denied.status_code == 403 and denied.json()["code"] == "sends_not_allowed"
    assert client.post("/test-only/redeem/",
                       headers=tenant_a.key_headers("sends:write", allow_sends=True)).status_code == 200
    assert client.post("/test-only/redeem/", headers=tenant_a.jwt_headers("editor")).status_code == 200
    assert client.post("/test-only/redeem/", headers=tenant_a.jwt_headers("viewer")).json()["code"] == "missing_scope"


def test_require_rejects_unknown_scope_names():
    with pytest.raises(ValueError):
        require("segments:reed")


@pytest.fixture
def segops(tmp_path, monkeypatch):
    """Run the `segops` CLI in-process on a fresh data dir."""
    data = tmp_path / "cli-data"
    monkeypatch.setenv("SEGOPS_DATA_DIR", str(data))  # restored after the test (the CLI sets it)
    cli.add_command_groups()
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(cli.app, ["--data", str(data), *args])
        assert (result.exit_code == 0) is ok, result.output
        return result
    run.data = data
    return run


def _client_for(data) -> TestClient:
    runtime = Runtime(Settings(data_dir=data, run_workers=False))
    return TestClient(create_app(runtime.settings, runtime=runtime))


def test_cli_tenants_users_and_keys(segops):
    tenant = int(segops("admin", "create-tenant", "Acme", "--plan", "starter").stdout.strip())
    user = int(segops("admin", "create-user", "--tenant", str(tenant), "--email", "Ops@Acme.test",
                      "--password", "long-enough-pw", "--role", "editor").stdout.strip())
    created = segops("keys", "create", "--tenant", str(tenant), "--name", "ingest",
                     "--scope", "events:write", "--scope", "membership:read", "--allow-sends")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_live_")

    listing = segops("keys", "list", "--tenant", str(tenant)).stdout
    assert "ingest" in listing and key not in listing

    client = _client_for(segops.data)
    who = client.get("/api/auth/me/", headers={"x-api-key": key})
    assert who.status_code == 200
    assert who.json()["plan"] == "starter" and set(who.json()["scopes"]) == {"events:write", "membership:read"}
    assert who.headers["x-ratelimit-limit"] == "300"
    token = client.post("/api/auth/token/", json={"email": "ops@acme.test", "password": "long-enough-pw"})
    assert token.status_code == 200
    user_view = client.get("/api/auth/me/", headers={"Authorization": f"Bearer {token.json()['access']}"}).json()
    assert (user_view["user_id"], user_view["role"], user_view["tenant_id"]) == (user, "editor", tenant)

    key_id = who.json()["api_key_id"]
    segops("keys", "revoke", str(key_id), "--tenant", str(tenant))
    assert _client_for(segops.data).get("/api/auth/me/", headers={"x-api-key": key}).status_code == 401


def test_cli_rejects_bad_input(segops):
    tenant = segops("admin", "create-tenant", "Acme").stdout.strip()
    assert "plan" in segops("admin", "create-tenant", "X", "--plan", "gold", ok=False).output
    assert "scopes[0]" in segops("keys", "create", "--tenant", tenant, "--name", "k", "--scope", "nope",
                                 ok=False).output
    assert "role" in segops("admin", "create-user", "--tenant", tenant, "--email", "a@b.test", "--password",
                            "long-enough-pw", "--role", "owner", ok=False).output
    segops("keys", "revoke", "99", "--tenant", tenant, ok=False)
    all_scopes = segops("keys", "create", "--tenant", tenant, "--name", "k", "--scope", "all").stdout
    assert all_scopes.strip().splitlines()[-1].startswith("sk_live_")
