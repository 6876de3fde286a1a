"""Shared fixtures for API tests: a real app on a tmp data dir, two tenants with credentials.

Use in a test module::

    pytest_plugins = ["tests.api_fixtures"]

    def test_list(client, tenants):
        a, b = tenants.a, tenants.b
        r = client.get("/api/segments/", headers=a.headers)            # ApiKey, all scopes, allow_sends
        r = client.get("/api/segments/", headers=a.jwt_headers())      # Bearer, admin user
        r = client.get("/api/segments/", headers=a.jwt_headers("viewer"))
        r = client.get("/api/segments/", headers=a.key_headers("segments:read"))  # a new narrow key
        assert client.get(f"/api/segments/{id_of_a}/", headers=b.headers).status_code == 404

Fixtures:
  * ``data_dir``  tmp data dir, pre-seeded with tenants A and B (copied from a session template, so
                  no argon2 hashing per test; ``secret.key`` is copied too, so JWTs verify).
  * ``runtime``   ``Runtime(Settings(data_dir=data_dir, run_workers=False))``, stopped afterwards.
  * ``app``       ``create_app(settings, runtime=runtime)``.
  * ``client``    ``fastapi.testclient.TestClient(app)`` (lifespan run; base URL http://testserver).
  * ``tenants``   ``.a`` / ``.b``: TenantCreds (below). Both tenants are on the "enterprise" plan
                  (unlimited) so tests never hit a 429; for rate-limit tests call
                  ``runtime.accounts.set_plan(a.tenant_id, "free", rate_limit_per_minute=3)``.
  * ``tenant_a`` / ``tenant_b``  shortcuts.

Each tenant has users ``admin@<t>.test``, ``editor@<t>.test``, ``viewer@<t>.test`` (password
``PASSWORD``) and one API key with every scope and ``allow_sends``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.accounts import ROLES, SCOPES
from engine.runtime import Runtime
from engine.settings import Settings

PASSWORD = "correct-horse-battery"
_TEMPLATE_FILES = ("meta.sqlite", "secret.key")


@dataclass
class TenantCreds:
    runtime: Runtime
    tenant_id: int
    name: str
    api_key: str                     # every scope, allow_sends
    api_key_id: int
    user_ids: dict[str, int]         # role -> user id
    emails: dict[str, str]           # role -> email
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization: ApiKey <full-scope key>``."""
        return {"Authorization": f"ApiKey {self.api_key}"}

    @property
    def user_id(self) -> int:
        return self.user_ids["admin"]

    @property
    def email(self) -> str:
        return self.emails["admin"]

    def jwt_headers(self, role: str = "admin") -> dict[str, str]:
        """``Authorization: Bearer <access JWT>`` for this tenant's user of ``role``."""
        return {"Authorization": f"Bearer {self.runtime.accounts.access_token(self.user_ids[role])}"}

    def key_headers(self, *scopes: str, allow_sends: bool = False) -> dict[str, str]:
        """Headers for a new API key of this tenant with exactly ``scopes``."""
        _, key = self.runtime.accounts.create_api_key(self.tenant_id, "test", scopes, allow_sends)
        return {"Authorization": f"ApiKey {key}"}


@dataclass
class Tenants:
    a: TenantCreds
    b: TenantCreds


@pytest.fixture(scope="session")
def _accounts_template(tmp_path_factory) -> tuple[Path, dict]:
    """Tenants A and B built once per session (argon2 is slow by design); each test copies the DB."""
    root = tmp_path_factory.mktemp("accounts-template")
    runtime = Runtime(Settings(data_dir=root, run_workers=False))
    accounts = runtime.accounts
    specs = {}
    for letter in ("a", "b"):
        tenant_id = accounts.create_tenant(f"Tenant {letter.upper()}", plan="enterprise")
        user_ids, emails = {}, {}
        for role in ROLES:
            emails[role] = f"{role}@{letter}.test"
            user_ids[role] = accounts.create_user(tenant_id, emails[role], PASSWORD, role)
        listing, key = accounts.create_api_key(tenant_id, "full", SCOPES, allow_sends=True)
        specs[letter] = dict(tenant_id=tenant_id, name=f"Tenant {letter.upper()}", api_key=key,
                             api_key_id=listing["id"], user_ids=user_ids, emails=emails)
    runtime.settings.secret_key  # noqa: B018 - written to secret.key now, copied with the DB
    runtime.meta.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    runtime.meta.close()
    return root, specs


@pytest.fixture
def data_dir(tmp_path, _accounts_template) -> Path:
    template, _ = _accounts_template
    data = tmp_path / "data"
    data.mkdir()
    for name in _TEMPLATE_FILES:
        shutil.copyfile(template / name, data / name)
    return data


@pytest.fixture
def runtime(data_dir):
    rt = Runtime(Settings(data_dir=data_dir, run_workers=False))
    yield rt
    rt.stop()
    rt.meta.close()


@pytest.fixture
def app(runtime):
    return create_app(runtime.settings, runtime=runtime)


@pytest.fixture
def client(app):
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def tenants(runtime, _accounts_template) -> Tenants:
    _, specs = _accounts_template
    return Tenants(**{letter: TenantCreds(runtime=runtime, **spec) for letter, spec in specs.items()})


@pytest.fixture
def tenant_a(tenants) -> TenantCreds:
    return tenants.a


@pytest.fixture
def tenant_b(tenants) -> TenantCreds:
    return tenants.b
