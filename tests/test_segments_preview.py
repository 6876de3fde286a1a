"""Preview and on-demand evaluation against the hand-built lake of tests.segments_fixtures."""
from __future__ import annotations

import duckdb

from tests.backend_fixtures import lake_view
from tests.segments_fixtures import (
    AS_OF,
    SEED_DEFINITION,
    SEED_MEMBERS_A,
    SEED_MEMBERS_B,
    UNIVERSE_A,
    create_segment,
)

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]

AS_OF_TEXT = AS_OF.isoformat() + "Z"
PRO = {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}
BUSY = {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 2, "window_days": 7}
# Hand-worked from the table in segments_fixtures:
EXPECTED = [
    (SEED_DEFINITION, SEED_MEMBERS_A),
    ({"logic": "OR", "conditions": [PRO, BUSY]}, {"alice", "ivy", "dave"}),
    # NOT is relative to the universe: frank's only event is after as_of, so he is not in it.
    ({"logic": "NOT", "conditions": [PRO]}, UNIVERSE_A - {"alice", "ivy"}),
    # an order, then a page view within 40 days: bob (10 -> 2), carol (50 -> 45), gina (31 -> 30);
    # hank viewed before ordering, alice never viewed
    ({"type": "sequence", "steps": [{"event_type": "order_placed"}, {"event_type": "page_viewed"}],
      "within_days": 40}, {"bob", "carol", "gina"}),
    ({"type": "frequency", "event_type": "order_placed", "operator": "eq", "value": 0}, {"dave", "ivy"}),
]


def preview(client, headers, definition, **extra):
    return client.post("/api/segments/preview/", json={"definition": definition, "as_of": AS_OF_TEXT, **extra},
                       headers=headers)


def test_seed_preview_matches_the_hand_computed_members(client, tenant_a, world):
    response = preview(client, tenant_a.headers, SEED_DEFINITION)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched_users"] == len(SEED_MEMBERS_A)
    assert body["sample_user_ids"] == sorted(SEED_MEMBERS_A)
    assert "SELECT" in body["sql"] and "\n" in body["sql"]  # DuckDB SQL, pretty printed
    assert "order_placed" in body["sql"]
    assert str(tenant_a.runtime.settings.data_dir) not in body["sql"]  # no file paths leak


def test_previews_and_evaluate_for_users_agree_with_hand_computed_sets(client, tenant_a, runtime, world):
    candidates = UNIVERSE_A | {"frank", "nobody"}
    for definition, expected in EXPECTED:
        body = preview(client, tenant_a.headers, definition, limit=1000).json()
        assert (body["matched_users"], body["sample_user_ids"]) == (len(expected), sorted(expected)), definition
        got = runtime.queries.evaluate_for_users(world.tenant_a, definition, candidates, as_of=AS_OF)
        assert got == expected, definition


def test_preview_sql_runs_by_hand_on_the_lake(client, tenant_a, runtime, world):
    """The SQL shown is the query: bound to the lake files it gives the same members."""
    sql = preview(client, tenant_a.headers, SEED_DEFINITION).json()["sql"]
    con = duckdb.connect()
    lake_view(con, runtime.lake.store, runtime.lake.snapshot(world.tenant_a), "all_events")
    con.execute("CREATE SCHEMA lake")
    con.execute("CREATE VIEW lake.events AS SELECT * FROM all_events")
    assert {row[0] for row in con.execute(sql).fetchall()} == SEED_MEMBERS_A


def test_sample_is_sorted_and_limited(client, tenant_a, world):
    universe = {"logic": "NOT", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "x"}]}
    body = preview(client, tenant_a.headers, universe, limit=3).json()
    assert body["matched_users"] == len(UNIVERSE_A)
    assert body["sample_user_ids"] == sorted(UNIVERSE_A)[:3]
    assert preview(client, tenant_a.headers, universe).json()["sample_user_ids"] == sorted(UNIVERSE_A)[:10]
    assert preview(client, tenant_a.headers, universe, limit=0).json()["sample_user_ids"] == []
    for limit in (-1, 1001):
        response = preview(client, tenant_a.headers, universe, limit=limit)
        assert response.status_code == 400 and "limit" in response.json()


def test_as_of_moves_the_windows(client, tenant_a, world):
    """Six days before AS_OF (given with a +02:00 offset, converted to UTC): hank has not ordered
    yet, bob has ordered but not yet viewed a page; gina's view is 24 days old."""
    earlier = "2026-02-23T14:00:00+02:00"  # = AS_OF - 6 days
    body = client.post("/api/segments/preview/", json={"definition": SEED_DEFINITION, "as_of": earlier},
                       headers=tenant_a.headers).json()
    assert body["sample_user_ids"] == ["alice", "bob", "carol"]
    bad = client.post("/api/segments/preview/", json={"definition": SEED_DEFINITION, "as_of": "yesterday"},
                      headers=tenant_a.headers)
    assert bad.status_code == 400 and "as_of" in bad.json()


def test_tenants_see_only_their_own_events(client, tenant_a, tenant_b, world):
    body = preview(client, tenant_b.headers, SEED_DEFINITION).json()
    assert body["sample_user_ids"] == sorted(SEED_MEMBERS_B)
    assert f'"tenant_id" = {tenant_b.tenant_id}' in body["sql"]


def test_tenant_without_data_and_unknown_names(client, tenant_a, runtime, world, tenants):
    empty_tenant = runtime.accounts.create_tenant("Empty", plan="enterprise")
    _, key = runtime.accounts.create_api_key(empty_tenant, "k", ["segments:read"])
    headers = {"Authorization": f"ApiKey {key}"}
    no_names = {"logic": "OR", "conditions": [BUSY, {"type": "first_seen", "operator": "gt", "window_days": 1}]}
    body = preview(client, headers, no_names).json()
    assert (body["matched_users"], body["sample_user_ids"]) == (0, [])
    unknown = preview(client, tenant_a.headers, {"type": "trait", "trait": "shoe_size", "operator": "is_set"})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_trait" and "definition.trait" in unknown.json()


def test_invalid_preview_definition_names_the_path(client, tenant_a, world):
    bad = {"logic": "AND", "conditions": [BUSY, {**BUSY, "operator": "around"}]}
    response = preview(client, tenant_a.headers, bad)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_operator"
    assert "definition.conditions[1].operator" in response.json()
    missing = client.post("/api/segments/preview/", json={"limit": 5}, headers=tenant_a.headers)
    assert missing.status_code == 400 and "definition" in missing.json()


def test_segment_references_resolve_to_current_definitions(client, tenant_a, world):
    seed = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    pro_churners = {"logic": "AND", "conditions": [{"type": "segment", "segment_id": seed["id"], "operator": "in"},
                                                   PRO]}
    assert preview(client, tenant_a.headers, pro_churners).json()["sample_user_ids"] == ["alice"]
    others = {"type": "segment", "segment_id": seed["id"], "operator": "not_in"}
    assert set(preview(client, tenant_a.headers, others, limit=100).json()["sample_user_ids"]) == \
        UNIVERSE_A - SEED_MEMBERS_A
    # change the referenced segment: the reference follows it
    client.patch(f"/api/segments/{seed['id']}/", json={"definition": PRO}, headers=tenant_a.headers)
    assert preview(client, tenant_a.headers, pro_churners).json()["sample_user_ids"] == ["alice", "ivy"]


def test_any_stored_version_can_be_previewed(client, tenant_a, world):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    url = f"/api/segments/{segment['id']}/"
    client.patch(url, json={"definition": PRO}, headers=tenant_a.headers)
    v1 = client.post(url + "versions/1/preview/", json={"as_of": AS_OF_TEXT}, headers=tenant_a.headers).json()
    assert (v1["version"], v1["sample_user_ids"]) == (1, sorted(SEED_MEMBERS_A))
    v2 = client.post(url + "versions/2/preview/", json={"as_of": AS_OF_TEXT, "limit": 1},
                     headers=tenant_a.headers).json()
    assert (v2["version"], v2["matched_users"], v2["sample_user_ids"]) == (2, 2, ["alice"])
    current = client.post(url + "preview/", headers=tenant_a.headers).json()  # no body: now, limit 10
    assert (current["version"], current["sample_user_ids"]) == (2, ["alice", "ivy"])
    assert client.post(url + "versions/3/preview/", json={}, headers=tenant_a.headers).status_code == 404
    draft = create_segment(client, tenant_a.headers, name="draft")
    response = client.post(f"/api/segments/{draft['id']}/preview/", headers=tenant_a.headers)
    assert response.status_code == 400 and response.json()["code"] == "segment_has_no_definition"
