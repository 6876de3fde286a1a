"""GET /api/profiles/ (search, offset pagination) and GET /api/profiles/<user_id>/."""
from __future__ import annotations

import pytest

from tests.membership_fixtures import add_events, add_profiles, compute, create_segment, frequency

pytest_plugins = ["tests.api_fixtures"]

PROFILES_A = {
    "alice": {"email": "Alice@Example.com", "plan": "pro", "age": 30},
    "albert": {"email": "al@corp.test", "plan": "free"},
    "bob": {"email": "bob@example.com", "vip": True},
    "carol": {"email": "carol@corp.test"},
    "user_%": {"email": "odd@corp.test"},
}


@pytest.fixture
def world(runtime, tenants):
    a, b = tenants.a.tenant_id, tenants.b.tenant_id
    add_profiles(runtime, a, PROFILES_A)
    add_profiles(runtime, b, {"bob": {"email": "bob-in-b@example.com"}, "dave": {"email": "dave@b.test"}})
    # bob: 25 events, one per minute (minutes ago = i), so the newest is i = 0
    add_events(runtime, a, [("bob", "view", {"i": i}, i) for i in range(25)] + [("eve", "buy", {}, 5)])
    segment = create_segment(runtime, a, frequency("view"))
    compute(runtime, a, segment)
    return {"views": segment}


def search(client, headers, **params):
    r = client.get("/api/profiles/", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_search_by_user_id_prefix_and_trait_prefix(client, tenants, world):
    h = tenants.a.headers
    assert [p["user_id"] for p in search(client, h, search="al")["results"]] == ["albert", "alice"]
    by_email = search(client, h, search="alice@example")  # case-insensitive on traits
    assert [p["user_id"] for p in by_email["results"]] == ["alice"]
    assert by_email["results"][0]["traits"] == PROFILES_A["alice"]
    assert [p["user_id"] for p in search(client, h, search="odd@")["results"]] == ["user_%"]
    assert search(client, h, search="user_%")["count"] == 1 and search(client, h, search="%")["count"] == 0
    assert search(client, h, search="dave")["count"] == 0  # tenant B's user


def test_offset_pagination(client, tenants, world):
    h = tenants.a.headers
    everyone = sorted(PROFILES_A)
    first = search(client, h, limit=2)
    assert first["count"] == len(everyone) and [p["user_id"] for p in first["results"]] == everyone[:2]
    assert first["previous"] is None and "offset=2" in first["next"]
    last = search(client, h, limit=2, offset=4)
    assert [p["user_id"] for p in last["results"]] == everyone[4:] and last["next"] is None
    assert client.get("/api/profiles/", params={"limit": 0}, headers=h).status_code == 400


def test_profile_detail(client, tenants, world):
    r = client.get("/api/profiles/bob/", headers=tenants.a.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "bob" and body["traits"] == PROFILES_A["bob"]
    events = body["recent_events"]
    assert [e["properties"]["i"] for e in events] == list(range(20))  # the 20 newest, newest first
    assert all(e["event_type"] == "view" and e["occurred_at"].endswith("Z") for e in events)
    assert body["segment_ids"] == [world["views"]]


def test_user_with_events_but_no_traits(client, tenants, world):
    body = client.get("/api/profiles/eve/", headers=tenants.a.headers).json()
    assert body["traits"] == {} and [e["event_type"] for e in body["recent_events"]] == ["buy"]
    assert body["segment_ids"] == []


def test_other_tenant_and_unknown_users_are_404(client, tenants, world):
    assert client.get("/api/profiles/dave/", headers=tenants.a.headers).status_code == 404
    assert client.get("/api/profiles/nobody/", headers=tenants.a.headers).status_code == 404
    b_view = client.get("/api/profiles/bob/", headers=tenants.b.headers).json()
    assert b_view["traits"] == {"email": "bob-in-b@example.com"}
    assert b_view["recent_events"] == [] and b_view["segment_ids"] == []


def test_scope(client, tenants, world):
    narrow = tenants.a.key_headers("segments:read", "membership:read")
    for path in ("/api/profiles/", "/api/profiles/bob/"):
        r = client.get(path, headers=narrow)
        assert r.status_code == 403 and r.json()["scope"] == ["profiles:read"]
    assert client.get("/api/profiles/bob/", headers=tenants.a.jwt_headers("viewer")).status_code == 200


def test_reads_see_a_later_identify_kept_in_the_profiles_delta(client, runtime, tenants, world):
    """A second identify flush is written as the profiles delta; search, detail and a
    trait segment all read base and delta together (the delta's row wins)."""
    a, h = tenants.a.tenant_id, tenants.a.headers
    add_profiles(runtime, a, {"alice": {"plan": "team"}, "zed": {"email": "zed@corp.test", "plan": "team"}})
    assert runtime.lake.profiles_snapshot(a).delta is not None
    assert search(client, h)["count"] == len(PROFILES_A) + 1
    assert [p["user_id"] for p in search(client, h, search="zed@")["results"]] == ["zed"]
    alice = client.get("/api/profiles/alice/", headers=h).json()
    assert alice["traits"] == {**PROFILES_A["alice"], "plan": "team"}
    team = create_segment(runtime, a, {"logic": "AND", "conditions": [
        {"type": "trait", "trait": "plan", "operator": "eq", "value": "team"}]}, name="team")
    compute(runtime, a, team)
    r = client.get(f"/api/segments/{team}/members/", headers=h)
    assert r.status_code == 200, r.text
    assert sorted(m["user_id"] for m in r.json()["results"]) == ["alice", "zed"]
