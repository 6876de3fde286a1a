"""Explain and impact over HTTP, on the real app and lake (tests/segments_fixtures.py's world; every
expectation is worked out by hand from its table)."""
from __future__ import annotations

from datetime import timedelta

from tests.segments_fixtures import AS_OF, DAY, SEED_DEFINITION, create_segment
from tests.sends_fixtures import make_journey, make_template

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures", "tests.sends_fixtures"]

WHEN = AS_OF.isoformat() + "Z"
BIG_SPENDERS = {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
                "operator": "gte", "value": 500}


def at(before: timedelta) -> str:
    return (AS_OF - before).isoformat() + "Z"


def explain(client, headers, segment_id, user, **query):
    return client.get(f"/api/segments/{segment_id}/explain/", params={"user_id": user, **query}, headers=headers)


def test_explain_a_segment(client, tenant_a, tenant_b, world):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    gina = explain(client, tenant_a.headers, segment["id"], "gina", as_of=WHEN)
    assert gina.status_code == 200, gina.text
    body = gina.json()
    assert (body["segment_id"], body["version"], body["user_id"], body["as_of"]) == (segment["id"], 1, "gina", WHEN)
    assert body["in_universe"] is True and body["member"] is False
    tree = body["explanation"]
    assert (tree["logic"], tree["held"], tree["decided_by"]) == ("AND", False, [1])
    spent, viewed = tree["conditions"]
    # 200 + 300 = 500 >= 500; both orders counted, latest first, with the property the condition used
    assert (spent["held"], spent["value"]) == (True, 500.0)
    assert [(e["occurred_at"], e["properties"]) for e in spent["events"]] == [
        (at(20 * DAY), {"total": 200.0}), (at(31 * DAY), {"total": 300.0})]
    assert all(e["event_type"] == "order_placed" and e["event_id"] for e in spent["events"])
    # the page view exactly 30 days back is inside recency's window: gt 30 fails
    assert (viewed["held"], viewed["value"], viewed["last_at"]) == (False, 1, at(30 * DAY))
    assert viewed["window"] == {"threshold_at": at(30 * DAY), "end": WHEN}
    assert [e["occurred_at"] for e in viewed["events"]] == [at(30 * DAY)]

    alice = explain(client, tenant_a.headers, segment["id"], "alice", as_of=WHEN).json()
    assert alice["member"] is True and alice["explanation"]["decided_by"] == [0, 1]
    nobody = explain(client, tenant_a.headers, segment["id"], "nobody", as_of=WHEN)
    assert nobody.status_code == 200
    empty = nobody.json()
    assert (empty["in_universe"], empty["member"]) == (False, False)
    assert [(c["held"], c["value"]) for c in empty["explanation"]["conditions"]] == [(False, 0), (False, 0)]

    # another tenant's segment, an unknown one, an unknown version: 404; too long a user id: 400
    assert explain(client, tenant_b.headers, segment["id"], "alice").status_code == 404
    assert explain(client, tenant_a.headers, 999999, "alice").json()["code"] == "not_found"
    assert explain(client, tenant_a.headers, segment["id"], "alice", version=7).status_code == 404
    long = explain(client, tenant_a.headers, segment["id"], "u" * 257)
    assert long.status_code == 400 and long.json()["code"] == "invalid_user_id" and "user_id" in long.json()
    missing = client.get(f"/api/segments/{segment['id']}/explain/", headers=tenant_a.headers)
    assert missing.status_code == 400 and "user_id" in missing.json()
    scopeless = explain(client, tenant_a.key_headers("segments:read"), segment["id"], "alice")
    assert scopeless.status_code == 403 and scopeless.json()["code"] == "missing_scope"

    # an older version by number
    client.patch(f"/api/segments/{segment['id']}/", json={"definition": BIG_SPENDERS}, headers=tenant_a.headers)
    old = explain(client, tenant_a.headers, segment["id"], "gina", as_of=WHEN, version=1).json()
    assert (old["version"], old["member"]) == (1, False)
    assert explain(client, tenant_a.headers, segment["id"], "gina", as_of=WHEN).json()["member"] is True


def test_explain_a_draft_definition(client, tenant_a, world):
    body = {"definition": {"logic": "NOT", "conditions": [
        {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}]}, "user_id": "ivy", "as_of": WHEN}
    response = client.post("/api/segments/explain/", json=body, headers=tenant_a.headers)
    assert response.status_code == 200, response.text
    tree = response.json()["explanation"]
    assert (response.json()["member"], tree["held"], tree["decided_by"]) == (False, False, [0])
    assert tree["conditions"][0]["value"] == "pro" and tree["conditions"][0]["held"] is True
    bad = client.post("/api/segments/explain/", json={**body, "definition": {"type": "nope"}}, headers=tenant_a.headers)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_condition_type"
    late = client.post("/api/segments/explain/", json={**body, "as_of": "10000-01-01"}, headers=tenant_a.headers)
    assert late.status_code == 400 and "as_of" in late.json()


def test_explain_a_past_computation(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    job = client.post(f"/api/segments/{segment['id']}/compute/", headers=tenant_a.headers).json()["job_id"]
    runtime.compute.run_pending()
    done = client.get(f"/api/segments/jobs/{job}/", headers=tenant_a.headers).json()
    members = {m["user_id"] for m in client.get(f"/api/segments/{segment['id']}/members/",
                                                 headers=tenant_a.headers).json()["results"]}
    assert members == {"alice", "bob", "carol", "gina", "hank"}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivy"):
        body = explain(client, tenant_a.headers, segment["id"], user, computation=job).json()
        assert body["member"] == (user in members), user
        assert (body["computation_id"], body["as_of"][:19]) == (job, done["as_of"][:19])
    both = explain(client, tenant_a.headers, segment["id"], "alice", computation=job, as_of=WHEN)
    assert both.status_code == 400 and "computation" in both.json()
    assert explain(client, tenant_a.headers, segment["id"], "alice", computation=job + 100).status_code == 404


def _journey(client, headers, template_id, **fields) -> dict:
    return make_journey(client, headers, status="active",
                        steps=[{"id": "hello", "type": "send_email", "templateId": template_id}], **fields)


def test_impact_of_an_edit(client, tenant_a, runtime, live_world):
    headers = tenant_a.headers
    template = make_template(client, headers)["id"]
    segment = create_segment(client, headers, BIG_SPENDERS)  # alice bob carol gina hank
    viewers = create_segment(client, headers, {"type": "frequency", "event_type": "page_viewed", "operator": "gte",
                                               "value": 2}, name="viewers")  # dave
    entered = _journey(client, headers, template, trigger={"type": "segment", "segmentId": segment["id"]})
    seen = _journey(client, headers, template, trigger={"type": "segment", "segmentId": viewers["id"]})
    exits = _journey(client, headers, template, trigger={"type": "api"},
                     exitCondition={"type": "segment", "segmentId": segment["id"]})
    always = _journey(client, headers, template, trigger={"type": "segment", "segmentId": segment["id"]},
                      reentry={"mode": "always"})
    make_journey(client, headers, trigger={"type": "segment", "segmentId": segment["id"]},
                 steps=[{"id": "x", "type": "exit"}])  # a draft: not counted
    for sid in (segment["id"], viewers["id"]):
        client.post(f"/api/segments/{sid}/compute/", headers=headers)
    runtime.compute.run_pending()
    # dave has had a run of `seen` (re-entry once), which now starts on our segment instead
    patched = client.patch(f"/api/journeys/{seen['id']}/", json={"trigger": {"type": "segment",
                                                                              "segmentId": segment["id"]}},
                           headers=headers)
    assert patched.status_code == 200, patched.text
    for user in ("dave", "erin"):  # active runs of the journey our segment exits
        r = client.post(f"/api/journeys/{exits['id']}/trigger/", json={"userId": user, "email": f"{user}@x.test"},
                        headers=headers)
        assert r.status_code in (200, 201, 202), r.text
    prepared = client.post("/api/broadcasts/prepare/", json={"templateId": template,
                                                               "audience": {"segmentId": segment["id"]}},
                           headers=headers)
    assert prepared.status_code == 201, prepared.text
    runs_before = runtime.meta.query_one("SELECT count(*) FROM journey_runs")[0]
    sends_before = runtime.meta.query_one("SELECT count(*) FROM email_sends")[0]

    draft = {"logic": "OR", "conditions": [
        {**BIG_SPENDERS, "value": 550},  # alice 550, bob 600, carol 900
        {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 2}]}  # dave
    response = client.post(f"/api/segments/{segment['id']}/impact/", json={"definition": draft}, headers=headers)
    assert response.status_code == 200, response.text
    impact = response.json()
    assert impact["enter"] == {"count": 1, "sample": ["dave"]}
    assert impact["stay"] == {"count": 3, "sample": ["alice", "bob", "carol"]}
    assert impact["leave"] == {"count": 2, "sample": ["gina", "hank"]}
    assert impact["syncs"] == [] and impact["version"] == 1
    # enter + stay = the draft's members at the same as_of; stay + leave = the current members
    preview = client.post("/api/segments/preview/", json={"definition": draft, "as_of": impact["as_of"],
                                                           "limit": 100}, headers=headers).json()
    assert set(preview["sample_user_ids"]) == set(impact["enter"]["sample"]) | set(impact["stay"]["sample"])
    current = client.get(f"/api/segments/{segment['id']}/members/", headers=headers).json()["results"]
    assert {m["user_id"] for m in current} == set(impact["stay"]["sample"]) | set(impact["leave"]["sample"])
    assert impact["computation_id"] == runtime.meta.query_one(
        "SELECT current_computation_id FROM segments WHERE id = ?", (segment["id"],))[0]

    journeys = {j["id"]: j for j in impact["journeys"]}
    assert set(journeys) == {entered["id"], seen["id"], exits["id"], always["id"]}
    assert journeys[entered["id"]]["runs_started"] == 1  # dave never ran it
    assert journeys[seen["id"]]["runs_started"] == 0  # re-entry once: dave already ran it
    assert journeys[always["id"]]["runs_started"] == 1
    assert journeys[exits["id"]] == {"id": exits["id"], "name": "J", "exit_condition": "segment", "runs_exited": 1}
    [broadcast] = impact["broadcasts"]
    assert (broadcast["id"], broadcast["audience_size"], broadcast["draft_audience_size"]) == (
        prepared.json()["id"], 5, 4)
    assert (broadcast["adds"], broadcast["removes"]) == (1, 2)

    # nothing was saved or sent
    assert client.get(f"/api/segments/{segment['id']}/", headers=headers).json()["definition"] == BIG_SPENDERS
    assert runtime.meta.query_one("SELECT count(*) FROM journey_runs")[0] == runs_before
    assert runtime.meta.query_one("SELECT count(*) FROM email_sends")[0] == sends_before

    # saving the draft with the impact's id: the new version records what the author saw
    url = f"/api/segments/{segment['id']}/"
    other = client.patch(url, json={"definition": BIG_SPENDERS | {"value": 1}, "impact_id": impact["impact_id"]},
                         headers=headers)
    assert other.status_code == 400 and other.json()["code"] == "invalid_impact" and "impact_id" in other.json()
    forged = client.patch(url, json={"definition": draft, "impact_id": impact["impact_id"][:-2] + "xy"},
                          headers=headers)
    assert forged.status_code == 400 and forged.json()["code"] == "invalid_impact"
    saved = client.patch(url, json={"definition": draft, "impact_id": impact["impact_id"]}, headers=headers)
    assert saved.status_code == 200 and saved.json()["version"] == 2, saved.text
    recorded = client.get(url + "versions/2/", headers=headers).json()["impact"]
    assert (recorded["impact_id"], recorded["as_of"], recorded["computation_id"]) == (
        impact["impact_id"], impact["as_of"], impact["computation_id"])
    assert (recorded["enter"], recorded["stay"], recorded["leave"], recorded["base_version"]) == (1, 3, 2, 1)
    assert (recorded["runs_started"], recorded["runs_exited"], recorded["broadcasts"]) == (2, 1, 1)
    assert client.get(url + "versions/1/", headers=headers).json()["impact"] is None
    stale = client.patch(url, json={"definition": BIG_SPENDERS, "impact_id": impact["impact_id"]}, headers=headers)
    assert stale.status_code == 400  # another definition than the impact's
    again = client.post(f"/api/segments/{segment['id']}/impact/", json={"definition": BIG_SPENDERS},
                        headers=headers).json()
    client.patch(url, json={"name": "renamed"}, headers=headers)  # metadata only: no new version
    reverted = client.patch(url, json={"definition": BIG_SPENDERS, "impact_id": again["impact_id"]},
                            headers=headers)
    assert reverted.status_code == 200 and reverted.json()["version"] == 3
    outdated = client.patch(url, json={"definition": draft, "impact_id": impact["impact_id"]}, headers=headers)
    assert outdated.status_code == 409 and outdated.json()["code"] == "impact_outdated"


def test_impact_errors_and_a_segment_never_computed(client, tenant_a, tenant_b, world):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    url = f"/api/segments/{segment['id']}/impact/"
    assert client.post(url, json={"definition": BIG_SPENDERS}, headers=tenant_b.headers).status_code == 404
    missing = client.post(url, json={}, headers=tenant_a.headers)
    assert missing.status_code == 400 and missing.json()["code"] == "missing_field"
    cycle = client.post(url, json={"definition": {"type": "segment", "segment_id": segment["id"], "operator": "in"}},
                        headers=tenant_a.headers)
    assert cycle.status_code == 400 and cycle.json()["code"] == "segment_cycle"
    # never computed: against the current definition evaluated now (the world's rows are in the past)
    fresh = client.post(url, json={"definition": BIG_SPENDERS, "sample": 0}, headers=tenant_a.headers).json()
    assert fresh["computation_id"] is None
    assert fresh["stay"]["count"] + fresh["leave"]["count"] == client.post(
        "/api/segments/preview/", json={"definition": SEED_DEFINITION, "as_of": fresh["as_of"]},
        headers=tenant_a.headers).json()["matched_users"]
    assert fresh["enter"]["sample"] == []


def test_cli_explain(client, tenant_a, runtime, data_dir, world):
    import typer
    from typer.testing import CliRunner

    from cli import segments as cli_segments

    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    app = typer.Typer()
    cli_segments.register(app)

    def segops(*args: str):
        return CliRunner().invoke(app, list(args), env={"SEGOPS_DATA_DIR": str(data_dir), "COLUMNS": "200"})

    done = segops("explain", str(segment["id"]), "gina", "--as-of", WHEN, "--tenant", str(tenant_a.tenant_id))
    assert done.exit_code == 0, done.output
    assert "not a member" in done.output and "AND (decided by 1)" in done.output
    assert "'value': 500.0" in done.output and "'last_at': '" + at(30 * DAY) in done.output
    unknown = segops("explain", "999999", "gina", "--tenant", str(tenant_a.tenant_id))
    assert unknown.exit_code == 2 and "no segment 999999" in unknown.output
