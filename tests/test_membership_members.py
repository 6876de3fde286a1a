"""GET /api/segments/<id>/members/: cursor pagination pinned to one computation."""
from __future__ import annotations

from datetime import timedelta

import pytest

from api.pagination import encode_cursor
from common.time import utc_now
from engine.membership import computations as compute_module
from tests.membership_fixtures import add_events, compute, create_segment, frequency

pytest_plugins = ["tests.api_fixtures"]

FIRST = [f"m{i:03d}" for i in range(23)]


@pytest.fixture
def segment(runtime, tenants):
    add_events(runtime, tenants.a.tenant_id, [(u, "buy", {}) for u in FIRST])
    segment_id = create_segment(runtime, tenants.a.tenant_id, frequency("buy"))
    compute(runtime, tenants.a.tenant_id, segment_id)
    return segment_id


def walk(client, headers, segment_id, limit, first_cursor=None, between_pages=None):
    users, cursor, pages = [], first_cursor, 0
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        r = client.get(f"/api/segments/{segment_id}/members/", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        users += [row["user_id"] for row in body["results"]]
        pages += 1
        if between_pages and pages == 1:
            between_pages()
        cursor = body["next_cursor"]
        if cursor is None:
            return users, body["count"], pages


def test_pages_cover_every_member_once_in_order(client, tenants, segment):
    users, count, pages = walk(client, tenants.a.headers, segment, limit=5)
    assert users == FIRST and count == len(FIRST) and pages == 5
    first = client.get(f"/api/segments/{segment}/members/", params={"limit": 1}, headers=tenants.a.headers).json()
    assert first["results"][0]["computed_at"].endswith("Z")


def test_walk_stays_on_its_snapshot_across_a_recompute(client, runtime, tenants, segment):
    a = tenants.a
    later = [f"z{i:03d}" for i in range(10)]

    def recompute():
        add_events(runtime, a.tenant_id, [(u, "buy", {}) for u in later])
        compute(runtime, a.tenant_id, segment)

    users, count, _ = walk(client, a.headers, segment, limit=4, between_pages=recompute)
    assert users == FIRST and count == len(FIRST)  # exactly once each, none of the new members
    fresh, fresh_count, _ = walk(client, a.headers, segment, limit=50)
    assert fresh == sorted(FIRST + later) and fresh_count == len(FIRST) + len(later)


def test_limits_and_bad_cursors(client, runtime, tenants, segment):
    h = tenants.a.headers
    assert client.get(f"/api/segments/{segment}/members/", params={"limit": 10_000}, headers=h).status_code == 200
    over = client.get(f"/api/segments/{segment}/members/", params={"limit": 10_001}, headers=h)
    assert over.status_code == 400 and "limit" in over.json()
    for bad in ("%%%", encode_cursor("m003"), encode_cursor({"c": "1", "u": "m"})):
        r = client.get(f"/api/segments/{segment}/members/", params={"cursor": bad}, headers=h)
        assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    other = create_segment(runtime, tenants.a.tenant_id, frequency("buy"))
    compute(runtime, tenants.a.tenant_id, other)
    computation = runtime.meta.query_one("SELECT current_computation_id FROM segments WHERE id = ?", (segment,))[0]
    foreign = client.get(f"/api/segments/{other}/members/", params={"cursor": encode_cursor({"c": computation, "u": ""})},
                         headers=h)
    assert foreign.status_code == 400 and foreign.json()["code"] == "invalid_cursor"


def test_never_computed_segment_answers_409(client, runtime, tenants):
    segment = create_segment(runtime, tenants.a.tenant_id, frequency("buy"))
    r = client.get(f"/api/segments/{segment}/members/", headers=tenants.a.headers)
    assert r.status_code == 409 and r.json()["code"] == "segment_not_computed"


def test_expired_snapshot_answers_410(client, runtime, tenants, segment):
    a = tenants.a
    first = client.get(f"/api/segments/{segment}/members/", params={"limit": 2}, headers=a.headers).json()
    for _ in range(compute_module.KEEP_COMPUTATIONS):
        compute(runtime, a.tenant_id, segment)
    later = utc_now() + compute_module.RETENTION_GRACE + timedelta(minutes=1)
    assert runtime.computations.apply_retention(a.tenant_id, segment, now=later) == 1
    r = client.get(f"/api/segments/{segment}/members/", params={"cursor": first["next_cursor"]}, headers=a.headers)
    assert r.status_code == 410 and r.json()["code"] == "cursor_expired"


def test_tenant_isolation_and_scope(client, runtime, tenants, segment):
    b = tenants.b
    assert client.get(f"/api/segments/{segment}/members/", headers=b.headers).status_code == 404
    first = client.get(f"/api/segments/{segment}/members/", params={"limit": 2}, headers=tenants.a.headers).json()
    # B's own computed segment with A's cursor: the cursor is not one of B's segment's snapshots.
    add_events(runtime, b.tenant_id, [("m000", "buy", {})])
    b_segment = create_segment(runtime, b.tenant_id, frequency("buy"))
    compute(runtime, b.tenant_id, b_segment)
    r = client.get(f"/api/segments/{b_segment}/members/", params={"cursor": first["next_cursor"]}, headers=b.headers)
    assert r.status_code == 400
    narrow = tenants.a.key_headers("segments:read")
    r = client.get(f"/api/segments/{segment}/members/", headers=narrow)
    assert r.status_code == 403 and r.json()["scope"] == ["membership:read"]
    assert client.get(f"/api/segments/{segment}/members/", headers=tenants.a.jwt_headers("viewer")).status_code == 200
