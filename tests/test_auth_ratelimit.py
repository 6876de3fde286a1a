"""Per-plan rate limits: headers on every authenticated response, 429 with Retry-After."""
from __future__ import annotations

import pytest

from engine.ratelimit import RateLimiter

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


def test_bucket_refills_at_the_per_minute_rate():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
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


def test_lowering_the_limit_caps_the_bucket():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.hit("t", 1000)
    assert limiter.hit("t", 3).remaining == 2


def test_idle_buckets_are_dropped_when_there_are_many():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, max_buckets=10)
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
