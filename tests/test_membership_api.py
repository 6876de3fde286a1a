"""Per-user membership over HTTP: GET (hot path) and bulk POST, against the computed members."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from engine.segments.store import SegmentStore
from tests.membership_fixtures import add_events, compute, create_segment, frequency

pytest_plugins = ["tests.api_fixtures"]

USERS_A = [f"a{i}" for i in range(12)]


@pytest.fixture
def world(runtime, tenants):
    """Tenant A: buyers (even users), viewers (multiples of 3), a never-computed 'clickers'
    segment and a draft. Tenant B: buyers among the *same* user ids, computed."""
    a, b = tenants.a.tenant_id, tenants.b.tenant_id
    events = [(u, "buy", {"total": i}) for i, u in enumerate(USERS_A) if i % 2 == 0]
    events += [(u, "view", {}) for i, u in enumerate(USERS_A) if i % 3 == 0]
    events += [(u, "click", {}) for i, u in enumerate(USERS_A) if i % 4 == 1]
    add_events(runtime, a, events)
    add_events(runtime, b, [(u, "buy", {"total": 1}) for u in USERS_A[:5]])
    segments = {
        "buy": create_segment(runtime, a, frequency("buy")),
        "view": create_segment(runtime, a, frequency("view")),
        "click": create_segment(runtime, a, frequency("click")),
        "draft": create_segment(runtime, a, None),
        "b_buy": create_segment(runtime, b, frequency("buy")),
    }
    for name in ("buy", "view", "b_buy"):
        compute(runtime, b if name.startswith("b_") else a, segments[name])
    return segments


def computed_members(runtime, segment_id: int) -> set[str]:
    """The members file of the segment's current computation, read independently of the index."""
    row = runtime.meta.query_one(
        "SELECT c.members_key FROM segments s JOIN segment_computations c ON c.id = s.current_computation_id"
        " WHERE s.id = ?", (segment_id,))
    path = runtime.lake.store.duckdb_path(row["members_key"])
    return set(pq.read_table(path).column("user_id").to_pylist())


def test_lookup_equals_computed_members(client, runtime, tenants, world):
    expected_sets = {s: computed_members(runtime, world[s]) for s in ("buy", "view")}
    assert expected_sets["buy"] == {u for i, u in enumerate(USERS_A) if i % 2 == 0}
    clickers = {u for i, u in enumerate(USERS_A) if i % 4 == 1}
    for user in [*USERS_A, "nobody"]:
        r = client.get("/api/segments/membership/", params={"user_id": user}, headers=tenants.a.headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        expected = sorted([world[s] for s, members in expected_sets.items() if user in members]
                          + ([world["click"]] if user in clickers else []))
        assert body == {"user_id": user, "segment_ids": expected, "cached": False}  # 'click' never computed


def test_cached_once_every_segment_is_computed(client, runtime, tenants, world):
    compute(runtime, tenants.a.tenant_id, world["click"])
    r = client.get("/api/segments/membership/", params={"user_id": "a1"}, headers=tenants.a.headers)
    assert r.json() == {"user_id": "a1", "segment_ids": [world["click"]], "cached": True}
    r = client.get("/api/segments/membership/", params={"user_id": "a0"}, headers=tenants.a.headers)
    assert r.json() == {"user_id": "a0", "segment_ids": sorted([world["buy"], world["view"]]), "cached": True}


def test_tenants_see_only_their_segments(client, tenants, world):
    # a0 exists in both tenants; each sees its own segments only.
    a = client.get("/api/segments/membership/", params={"user_id": "a0"}, headers=tenants.a.headers).json()
    b = client.get("/api/segments/membership/", params={"user_id": "a0"}, headers=tenants.b.jwt_headers()).json()
    assert world["b_buy"] not in a["segment_ids"] and world["buy"] in a["segment_ids"]
    assert b == {"user_id": "a0", "segment_ids": [world["b_buy"]], "cached": True}
    # a6 is a buyer in A only.
    b6 = client.post("/api/segments/membership/", json={"user_ids": ["a6"]}, headers=tenants.b.headers).json()
    assert b6["results"] == [{"user_id": "a6", "segment_ids": [], "cached": True}]


def test_deleted_segment_never_appears(client, runtime, tenants, world):
    a = tenants.a
    before = client.get("/api/segments/membership/", params={"user_id": "a0"}, headers=a.headers).json()
    assert world["buy"] in before["segment_ids"]
    SegmentStore(runtime.meta).delete(a.tenant_id, world["buy"])
    after = client.get("/api/segments/membership/", params={"user_id": "a0"}, headers=a.headers).json()
    assert world["buy"] not in after["segment_ids"] and world["view"] in after["segment_ids"]
    bulk = client.post("/api/segments/membership/", json={"user_ids": ["a0", "a2"]}, headers=a.headers).json()
    assert all(world["buy"] not in r["segment_ids"] for r in bulk["results"])


def test_bulk_matches_single_lookups(client, tenants, world):
    users = ["a3", "a0", "nobody", "a0", "a5"]
    r = client.post("/api/segments/membership/", json={"user_ids": users}, headers=tenants.a.headers)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == users
    for result in results:
        single = client.get("/api/segments/membership/", params={"user_id": result["user_id"]},
                            headers=tenants.a.headers).json()
        assert result == single


def test_bulk_limit_and_item_validation(client, tenants, world):
    h = tenants.a.headers
    ok = client.post("/api/segments/membership/", json={"user_ids": [f"u{i}" for i in range(1000)]}, headers=h)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1000
    over = client.post("/api/segments/membership/", json={"user_ids": [f"u{i}" for i in range(1001)]}, headers=h)
    assert over.status_code == 400
    assert over.json()["code"] == "too_many_user_ids" and "user_ids" in over.json()
    bad = client.post("/api/segments/membership/", json={"user_ids": ["a0", 7]}, headers=h)
    assert bad.status_code == 400 and "user_ids[1]" in bad.json()
    missing = client.post("/api/segments/membership/", json={}, headers=h)
    assert missing.status_code == 400 and "user_ids" in missing.json()


def test_get_requires_user_id_and_decodes_it(client, tenants, world):
    r = client.get("/api/segments/membership/", headers=tenants.a.headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_user_id" and "user_id" in r.json()
    odd = "a0 & b=c/é"
    r = client.get("/api/segments/membership/", params={"user_id": odd}, headers=tenants.a.headers)
    assert r.json() == {"user_id": odd, "segment_ids": [], "cached": False}
    assert client.get("/api/segments/membership", params={"user_id": "a0"}, headers=tenants.a.headers,
                      follow_redirects=True).json()["user_id"] == "a0"  # no trailing slash: redirected


def test_auth_scope_and_rate_limit(client, runtime, tenants, world):
    a = tenants.a
    assert client.get("/api/segments/membership/?user_id=a0").status_code == 401
    narrow = a.key_headers("segments:read")
    for r in (client.get("/api/segments/membership/?user_id=a0", headers=narrow),
              client.post("/api/segments/membership/", json={"user_ids": ["a0"]}, headers=narrow)):
        assert r.status_code == 403 and r.json()["code"] == "missing_scope" and r.json()["scope"] == ["membership:read"]
    allowed = a.key_headers("membership:read")
    assert client.get("/api/segments/membership/?user_id=a0", headers=allowed).status_code == 200
    runtime.accounts.set_plan(a.tenant_id, "free", rate_limit_per_minute=2)
    runtime.accounts.invalidate()
    codes = [client.get("/api/segments/membership/?user_id=a0", headers=allowed) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[0].headers["x-ratelimit-limit"] == "2" and "retry-after" in codes[2].headers
