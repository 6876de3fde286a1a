"""bootstrap_demo: the demo tenant `make serve` prints credentials for, idempotent across restarts."""
from __future__ import annotations

import stat

import orjson

from engine.accounts import bootstrap_demo

pytest_plugins = ["tests.api_fixtures"]


def test_bootstrap_demo_is_idempotent_and_its_credentials_work(client, runtime):
    tenant_id, key, email, password = bootstrap_demo(runtime.accounts, runtime.settings.data_dir)
    assert bootstrap_demo(runtime.accounts, runtime.settings.data_dir) == (tenant_id, key, email, password)
    assert email == "demo@segops.local"

    who = client.get("/api/auth/me/", headers={"Authorization": f"ApiKey {key}"}).json()
    assert (who["tenant_id"], who["plan"], who["allow_sends"]) == (tenant_id, "enterprise", True)
    assert "keys:write" in who["scopes"] and "sends:write" in who["scopes"]
    token = client.post("/api/auth/token/", json={"email": email, "password": password})
    assert token.status_code == 200

    path = runtime.settings.data_dir / "demo-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes())["api_key"] == key


def test_bootstrap_demo_replaces_a_revoked_key_and_a_lost_file(client, runtime):
    tenant_id, key, _, _ = bootstrap_demo(runtime.accounts, runtime.settings.data_dir)
    key_id = client.get("/api/auth/me/", headers={"x-api-key": key}).json()["api_key_id"]
    runtime.accounts.revoke_api_key(tenant_id, key_id)
    tenant_again, new_key, _, password = bootstrap_demo(runtime.accounts, runtime.settings.data_dir)
    assert tenant_again == tenant_id and new_key != key
    assert client.get("/api/auth/me/", headers={"x-api-key": new_key}).status_code == 200

    (runtime.settings.data_dir / "demo-credentials.json").unlink()
    tenant_third, third_key, email, third_password = bootstrap_demo(runtime.accounts, runtime.settings.data_dir)
    assert tenant_third == tenant_id
    assert client.get("/api/auth/me/", headers={"x-api-key": third_key}).status_code == 200
    assert client.post("/api/auth/token/", json={"email": email, "password": third_password}).status_code == 200
