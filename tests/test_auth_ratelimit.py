"""Per-plan rate limits: headers on every authenticated response, 429 with Retry-After."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.ratelimit import RateLimiter
from engine.runtime import Runtime
from engine.settings import Settings
from tests.storage_fixtures import free_port

pytest_plugins = ["tests.api_fixtures"]


def me(client, headers):
    return client.get("/api/auth/me/", headers=headers)


def test_429_after_the_limit_with_headers(client, runtime, tenant_a, tenant_b):
    runtime.accounts.set_plan(tenant_a.tenant_id, "free", rate_limit_per_minute=3)
    seen = []
    for _ in range(3):
        r = me(client, tenant_a.headers)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "3"
        seen.append(int(r.headers["x-ratelimit-remaining"]))
        assert 0 < int(r.headers["x-ratelimit-reset"]) <= 60
    assert seen == [2, 1, 0]

    limited = me(client, tenant_a.headers)
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    # 3 per minute refill one request every 20 s
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    assert limited.headers["x-ratelimit-remaining"] == "0"

    # the limit is the tenant's, whatever the credential
    assert me(client, tenant_a.jwt_headers()).status_code == 429
    assert me(client, tenant_a.key_headers("segments:read")).status_code == 429
    # another tenant is not affected; enterprise is unlimited, so it carries no limit headers
    other = me(client, tenant_b.headers)
    assert other.status_code == 200 and "x-ratelimit-limit" not in other.headers


@pytest.mark.parametrize("plan,per_minute", [("free", 60), ("starter", 300), ("business", 1000)])
def test_plan_limits(client, runtime, tenant_a, plan, per_minute):
    runtime.accounts.set_plan(tenant_a.tenant_id, plan)
    r = me(client, tenant_a.headers)
    assert r.headers["x-ratelimit-limit"] == str(per_minute)
    assert r.headers["x-ratelimit-remaining"] == str(per_minute - 1)


def test_new_tenants_default_to_free(runtime):
    tenant_id = runtime.accounts.create_tenant("Fresh")
    assert runtime.accounts.get_tenant(tenant_id)["plan"] == "free"


def test_headers_on_error_responses_of_authenticated_requests(client, runtime, tenant_a):
    runtime.accounts.set_plan(tenant_a.tenant_id, "starter")
    missing = client.get("/api/keys/424242/", headers=tenant_a.headers)
    assert missing.status_code == 404 and missing.headers["x-ratelimit-limit"] == "300"
    forbidden = client.get("/api/keys/", headers=tenant_a.key_headers("segments:read"))
    assert forbidden.status_code == 403 and forbidden.headers["x-ratelimit-remaining"] == "298"
    assert "x-ratelimit-limit" not in client.get("/api/auth/me/").headers  # unauthenticated


def test_enterprise_custom_limit(client, runtime, tenant_a):
    runtime.accounts.set_plan(tenant_a.tenant_id, "enterprise", rate_limit_per_minute=5000)
    assert me(client, tenant_a.headers).headers["x-ratelimit-limit"] == "5000"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_bucket_refills_at_the_per_minute_rate(tmp_path):
    clock = FakeClock()
    limiter = RateLimiter(tmp_path / "ratelimit.sqlite", clock=clock)
    assert all(limiter.hit("t", 60).allowed for _ in range(60))  # the whole minute may burst
    denied = limiter.hit("t", 60)
    assert not denied.allowed and denied.retry_after == 1 and denied.headers()["Retry-After"] == "1"
    clock.now += 1.0  # 60/min = one per second
    assert limiter.hit("t", 60).allowed
    assert not limiter.hit("t", 60).allowed
    clock.now += 30.0
    decision = limiter.hit("t", 60)
    assert decision.allowed and decision.remaining == 29 and decision.reset == 31
    clock.now += 3600.0  # never more than a full bucket
    assert limiter.hit("t", 60).remaining == 59
    assert limiter.hit("other", 60).remaining == 59


def test_lowering_the_limit_caps_the_bucket(tmp_path):
    clock = FakeClock()
    limiter = RateLimiter(tmp_path / "ratelimit.sqlite", clock=clock)
    limiter.hit("t", 1000)
    assert limiter.hit("t", 3).remaining == 2


def test_idle_buckets_are_dropped_when_there_are_many(tmp_path):
    clock = FakeClock()
    limiter = RateLimiter(tmp_path / "ratelimit.sqlite", clock=clock, max_buckets=10)
    for i in range(10):
        limiter.hit(("login", i), 5)
    clock.now += 30.0
    limiter.hit("recent", 5)
    assert len(limiter) == 11  # nothing idle for a whole window yet
    for _ in range(4):
        limiter.hit("recent", 5)
    clock.now += 40.0  # the first ten are now idle for 70 s, "recent" for 40 s
    limiter.hit("new", 5)
    assert len(limiter) == 2
    # "recent" kept its state: 0 tokens at t=30 + 40 s * 5/60 per s = 3.33, minus this hit
    assert limiter.hit("recent", 5).remaining == 2


# -- one bucket shared by the processes on a data dir (each RateLimiter below is one process's) --------
def _allowed(limiters, key, limit, hits):
    """Hits spread over the limiters in turn (a load balancer alternating between processes)."""
    return sum(limiters[i % len(limiters)].hit(key, limit).allowed for i in range(hits))


def test_processes_share_one_bucket(tmp_path):
    clock = FakeClock()
    a, b = (RateLimiter(tmp_path / "ratelimit.sqlite", clock=clock) for _ in range(2))
    assert _allowed([a, b], "t", 60, 200) == 60  # per-process buckets: 120
    clock.now += 1.0  # one token refilled, for both processes together
    assert _allowed([a, b], "t", 60, 20) == 1
    clock.now += 30.0
    assert _allowed([b, a], "t", 60, 100) == 30
    assert _allowed([a, b], "other", 60, 10) == 10


def test_leased_slices_bound_the_shortfall_and_never_exceed_the_limit(tmp_path):
    """Tokens are leased in slices of 2 % of the limit (20 of 1000): a slice that one process holds
    unspent cannot serve another's requests, so the others may be refused that much early."""
    clock = FakeClock()
    a, b, c = (RateLimiter(tmp_path / "ratelimit.sqlite", clock=clock) for _ in range(3))
    assert b.hit("t", 1000).allowed and c.hit("t", 1000).allowed  # each leases 20 and spends 1
    allowed = 2 + _allowed([a], "t", 1000, 2000)
    assert 1000 - 2 * 19 <= allowed <= 1000
    assert _allowed([b, c], "t", 1000, 38) == 38  # their slices are still theirs
    assert allowed + 38 == 1000
    assert not a.hit("t", 1000).allowed and not b.hit("t", 1000).allowed


def _bucket_row(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT tokens, updated FROM buckets").fetchall()


def test_refusals_stay_local_until_the_next_token_is_due(tmp_path):
    """Over the limit, a process answers from what it learnt at its last lease: a flood costs no
    shared-store writes until the next token is due."""
    clock, path = FakeClock(), tmp_path / "ratelimit.sqlite"
    a, b = (RateLimiter(path, clock=clock) for _ in range(2))
    assert _allowed([a, b], "t", 60, 70) == 60
    exhausted = _bucket_row(path)
    clock.now += 0.5
    refused = [limiter.hit("t", 60) for limiter in (a, b) * 500]
    assert not any(d.allowed for d in refused) and {d.retry_after for d in refused} == {1}
    assert b.blocked("t") is not None and b.blocked("t").retry_after == 1
    assert _bucket_row(path) == exhausted
    clock.now += 0.5
    assert b.blocked("t") is None
    assert _allowed([a, b], "t", 60, 10) == 1
    assert _bucket_row(path) != exhausted


# -- two real servers on one data dir -----------------------------------------------------------------
SEGOPS = str(Path(sys.executable).with_name("segops"))
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def _servers(data_dir: Path, count: int, log: Path):
    """`segops serve` processes on one data dir, each on its own port; yields their base URLs."""
    ports = [free_port() for _ in range(count)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        procs = [subprocess.Popen([SEGOPS, "--data", str(data_dir), "serve", "--port", str(port), "--no-workers"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env) for port in ports]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for proc, base in zip(procs, bases):
            deadline = time.monotonic() + 120
            while True:
                try:  # no credential: answered 401 without touching any limit
                    if httpx.get(base + "/api/auth/me/", timeout=5).status_code == 401:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("server did not start:\n" + log.read_text(errors="replace")[-3000:])
                time.sleep(0.2)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


@pytest.mark.slow
def test_two_servers_on_one_data_dir_share_the_free_plan_limit(runtime, tenant_a, tmp_path):
    """One free-tenant key sent to two `segops serve` processes in turn: 60 answers in all, not 60 each."""
    runtime.accounts.set_plan(tenant_a.tenant_id, "free")
    with _servers(runtime.settings.data_dir, 2, tmp_path / "servers.log") as bases, httpx.Client(
            headers=tenant_a.headers, timeout=30) as client:
        started = time.monotonic()
        answers = [(i % 2, client.get(bases[i % 2] + "/api/auth/me/")) for i in range(150)]
        ok = [server for server, r in answers if r.status_code == 200]
        # a token bucket of 60 refills one per second while the burst runs
        assert 54 <= len(ok) <= 60 + (time.monotonic() - started) + 1
        assert set(ok) == {0, 1}  # both servers spent from the same allowance
        limited = [r for _, r in answers if r.status_code == 429]
        assert limited and len(limited) + len(ok) == 150
        for r in limited[-2:] + [client.get(base + "/api/segments/membership/?user_id=u") for base in bases]:
            assert r.status_code == 429 and r.json()["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["x-ratelimit-limit"] == "60" and r.headers["x-ratelimit-remaining"] == "0"
            assert 0 < int(r.headers["x-ratelimit-reset"]) <= 60

        time.sleep(int(limited[-1].headers["retry-after"]))  # the next token is due: either server takes it
        later = [client.get(bases[i % 2] + "/api/auth/me/").status_code for i in range(10)]
        assert 1 <= later.count(200) <= 60 + (time.monotonic() - started) + 1 - len(ok)


# -- logins and invalid credentials, per client address and in all ----------------------------------------
@pytest.fixture
def limited(data_dir):
    """An app with small login and invalid-credential limits, and a client per address."""
    settings = Settings(data_dir=data_dir, run_workers=False, login_limit_per_address=3, login_limit_per_email=4,
                        login_limit_global=5, invalid_credential_limit_per_address=3)
    runtime = Runtime(settings)
    app = create_app(settings, runtime=runtime)
    yield lambda address: TestClient(app, client=(address, 40000))
    runtime.stop()
    runtime.meta.close()


def _login(client, email, password="wrong-password"):
    return client.post("/api/auth/token/", json={"email": email, "password": password})


def assert_429(r):
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)


def test_logins_are_limited_per_address_and_in_all(limited, tenant_a):
    sprayer = limited("203.0.113.7")
    assert [_login(sprayer, f"user{i}@spray.test").status_code for i in range(3)] == [401] * 3
    assert_429(_login(sprayer, "user3@spray.test"))  # a new email each time does not help
    assert_429(_login(sprayer, tenant_a.email, tenant_a.password))  # nor the right password, from there
    other = limited("198.51.100.2")
    assert _login(other, tenant_a.email, tenant_a.password).status_code == 200
    assert _login(other, "someone@else.test").status_code == 401  # 5 attempts in all so far
    assert_429(_login(limited("192.0.2.9"), tenant_a.email, tenant_a.password))  # the global limit


def test_logins_are_limited_per_email_across_addresses(limited, tenant_a):
    for i in range(4):
        assert _login(limited(f"192.0.2.{i}"), tenant_a.email).status_code == 401
    assert_429(_login(limited("192.0.2.200"), tenant_a.email, tenant_a.password))


def test_invalid_credentials_are_limited_per_address(limited, tenant_a, runtime):
    guesser = limited("203.0.113.8")
    bad = [{"Authorization": "ApiKey sk_live_guess"}, {"x-api-key": "sk_live_guess2"},
           {"Authorization": "Bearer not.a.jwt"}]
    assert [guesser.get("/api/auth/me/", headers=h).status_code for h in bad] == [401] * 3
    assert_429(guesser.get("/api/auth/me/", headers=bad[0]))
    # refused before any credential is checked, so a right guess would not be told apart either
    assert_429(guesser.get("/api/auth/me/", headers=tenant_a.headers))
    assert_429(guesser.get("/api/segments/membership/?user_id=u", headers=tenant_a.headers))  # the fast path
    assert_429(guesser.post("/api/auth/token/refresh/", json={"refresh": "not.a.jwt"}))
    elsewhere = limited("198.51.100.3")
    assert elsewhere.get("/api/auth/me/", headers=bad[0]).status_code == 401
    assert elsewhere.get("/api/auth/me/", headers=tenant_a.headers).status_code == 200


def test_invalid_refresh_tokens_count_like_invalid_keys(limited):
    client = limited("203.0.113.9")
    for _ in range(3):
        assert client.post("/api/auth/token/refresh/", json={"refresh": "not.a.jwt"}).status_code == 401
    assert_429(client.post("/api/auth/token/refresh/", json={"refresh": "not.a.jwt"}))


def test_ipv6_callers_are_limited_per_64_not_per_address(limited):
    # one host is routinely given a whole /64: a new address per guess must not reset the count
    guesses = [limited(f"2001:db8:1:2::{i:x}").get("/api/auth/me/", headers={"Authorization": "ApiKey sk_live_x"})
               for i in range(1, 4)]
    assert [r.status_code for r in guesses] == [401] * 3
    assert_429(limited("2001:db8:1:2:ffff::9").get("/api/auth/me/", headers={"Authorization": "ApiKey sk_live_x"}))
    other_net = limited("2001:db8:1:3::1").get("/api/auth/me/", headers={"Authorization": "ApiKey sk_live_x"})
    assert other_net.status_code == 401
