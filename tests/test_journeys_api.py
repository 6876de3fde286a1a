"""Journeys over HTTP: definition validation, status and versions, the API trigger, waits,
branches, exit conditions, re-entry, pausing, unsubscribed recipients; the worker's cycle is
driven in the test thread (the E2E test runs the real background workers)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engagement.journeys.model import next_time_of_day
from tests.sends_fixtures import drain, fast_forward, make_journey, make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

USERS = {"u1": {"email": "u1@example.com", "first_name": "Ann", "plan": "pro", "timezone": "Europe/Paris"},
         "u2": {"email": "u2@example.com", "first_name": "Bob", "plan": "free"},
         "u3": {"email": "u3@example.com", "first_name": "Cy", "plan": "pro"}}


@pytest.fixture
def setup(client, tenants, runtime):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    welcome = make_template(client, a.headers, name="welcome", subject="Welcome {{ first_name }}")
    pro = make_template(client, a.headers, name="pro", subject="Pro tips for {{ first_name }}")
    free = make_template(client, a.headers, name="free", subject="Upgrade, {{ first_name }}")
    return a, welcome["id"], pro["id"], free["id"]


def _steps(welcome, pro, free):
    return [{"id": "hello", "type": "send_email", "templateId": welcome},
            {"id": "pause", "type": "wait", "duration": {"hours": 1}},
            {"id": "is-pro", "type": "branch", "condition": {"type": "trait", "trait": "plan", "value": "pro"},
             "then": "pro", "else": "free"},
            {"id": "pro", "type": "send_email", "templateId": pro, "next": None},
            {"id": "free", "type": "send_email", "templateId": free}]


def subjects(data_dir) -> list[tuple[str, str]]:
    return sorted((m["To"], m["Subject"]) for m in outbox(data_dir))


def test_definition_validation_names_the_field(client, setup):
    a, welcome, pro, free = setup
    base = {"name": "x", "trigger": {"type": "api"}}
    cases = [
        ({"steps": [{"id": "a", "type": "wait", "duration": {"hours": 1}},
                    {"id": "a", "type": "exit"}]}, "steps[1].id", "duplicate_step_id"),
        ({"steps": [{"id": "a", "type": "send_email", "templateId": welcome, "next": "nope"}]},
         "steps[0].next", "unknown_step"),
        ({"steps": [{"id": "a", "type": "wait", "duration": {"hours": 1}, "next": "b"},
                    {"id": "b", "type": "branch", "condition": {"type": "event", "eventType": "x"}, "then": "a"}]},
         "steps[1]", "journey_cycle"),
        ({"steps": [{"id": "a", "type": "send_email", "templateId": 99999}]}, "steps[0].templateId",
         "template_not_found"),
        ({"steps": [{"id": "a", "type": "branch", "condition": {"type": "segment", "segmentId": 4242}}]},
         "steps[0].condition.segmentId", "segment_not_found"),
    ]
    for extra, path, code in cases:
        r = client.post("/api/journeys/", json={**base, **extra}, headers=a.headers)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == code and path in r.json(), r.json()
    shape = client.post("/api/journeys/", json={**base, "steps": [{"id": "w", "type": "wait"}]}, headers=a.headers)
    assert shape.status_code == 400 and any(k.startswith("steps[0]") for k in shape.json())
    reentry = client.post("/api/journeys/", json={**base, "steps": [{"id": "e", "type": "exit"}],
                                                  "reentry": {"mode": "after"}}, headers=a.headers)
    assert reentry.status_code == 400


def test_status_versions_and_tenancy(client, setup, tenants):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, trigger={"type": "event", "eventType": "signup"},
                     steps=_steps(welcome, pro, free))
    assert j["status"] == "draft" and j["version"] == 1 and j["reentry"] == {"mode": "once"}
    assert [s["next"] for s in j["steps"] if s["type"] != "branch"] == ["pause", "is-pro", None, None]
    active = client.patch(f"/api/journeys/{j['id']}/", json={"status": "active"}, headers=a.headers).json()
    assert active["status"] == "active" and active["activatedAt"] and active["version"] == 1
    edited = client.patch(f"/api/journeys/{j['id']}/", json={"reentry": {"mode": "always"}}, headers=a.headers).json()
    assert edited["version"] == 2 and edited["trigger"]["eventType"] == "signup"
    same = client.patch(f"/api/journeys/{j['id']}/", json={"reentry": {"mode": "always"}}, headers=a.headers).json()
    assert same["version"] == 2
    bad = client.patch(f"/api/journeys/{j['id']}/", json={"status": "draft"}, headers=a.headers)
    assert bad.status_code == 409 and bad.json()["code"] == "invalid_transition"
    assert client.get(f"/api/journeys/{j['id']}/", headers=tenants.b.headers).status_code == 404
    assert client.get("/api/journeys/?status=active", headers=a.headers).json()["count"] == 1
    archived = client.delete(f"/api/journeys/{j['id']}/", headers=a.headers).json()
    assert archived["status"] == "archived"
    assert client.patch(f"/api/journeys/{j['id']}/", json={"name": "x"}, headers=a.headers).status_code == 409
    viewer = a.key_headers("journeys:read")
    assert client.post("/api/journeys/", json={"name": "x", "trigger": {"type": "api"},
                                               "steps": [{"id": "e", "type": "exit"}]},
                       headers=viewer).status_code == 403


def test_api_trigger_waits_branches_and_sends_per_recipient(client, setup, runtime, data_dir):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, status="active", trigger={"type": "api"}, steps=_steps(welcome, pro, free))
    runs = {}
    for user in ("u1", "u2"):
        r = client.post(f"/api/journeys/{j['id']}/trigger/", json={"userId": user}, headers=a.headers)
        assert r.status_code == 202, r.text
        runs[user] = r.json()["id"]
        assert r.json()["status"] == "active" and r.json()["currentStep"] == "hello"
    drain(runtime)
    assert subjects(data_dir) == [("u1@example.com", "Welcome Ann"), ("u2@example.com", "Welcome Bob")]
    waiting = client.get(f"/api/journeys/{j['id']}/runs/{runs['u1']}/", headers=a.headers).json()
    assert waiting["status"] == "active" and waiting["currentStep"] == "is-pro"
    assert [s["stepId"] for s in waiting["steps"]] == ["hello", "pause"]
    assert waiting["steps"][0]["sendStatus"] == "sent" and waiting["steps"][1]["until"] == waiting["wakeAt"]
    drain(runtime)  # nothing is due before the wait elapses
    assert len(outbox(data_dir)) == 2

    assert fast_forward(runtime, j["id"]) == 2
    drain(runtime)
    assert subjects(data_dir) == [("u1@example.com", "Pro tips for Ann"), ("u1@example.com", "Welcome Ann"),
                                  ("u2@example.com", "Upgrade, Bob"), ("u2@example.com", "Welcome Bob")]
    done = client.get(f"/api/journeys/{j['id']}/runs/{runs['u1']}/", headers=a.headers).json()
    assert done["status"] == "completed" and done["finishedAt"]
    assert [(s["stepId"], s.get("conditionMet")) for s in done["steps"]] == [
        ("hello", None), ("pause", None), ("is-pro", True), ("pro", None)]
    stats = client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]
    assert stats["runs"] == 2 and stats["completedRuns"] == 2 and stats["sentCount"] == 4

    draft = make_journey(client, a.headers, trigger={"type": "api"}, steps=[{"id": "e", "type": "exit"}])
    r = client.post(f"/api/journeys/{draft['id']}/trigger/", json={"userId": "u1"}, headers=a.headers)
    assert r.status_code == 409 and r.json()["code"] == "journey_not_active"
    r = client.post(f"/api/journeys/{j['id']}/trigger/", json={"userId": "nobody"}, headers=a.headers)
    assert r.status_code == 422 and r.json()["code"] == "no_email_address"
    assert client.get(f"/api/journeys/{j['id']}/runs/999999/", headers=a.headers).status_code == 404


def test_event_trigger_filters_unknown_events_and_reentry(client, setup, runtime, data_dir):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, status="active",
                     trigger={"type": "event", "eventType": "signup",
                              "filters": [{"property": "source", "operator": "eq", "value": "web"}]},
                     steps=[{"id": "hello", "type": "send_email", "templateId": welcome}])
    post = lambda body: client.post("/api/events/", json=body, headers=a.headers).json()  # noqa: E731
    assert post({"user_id": "u1", "event_type": "signup", "properties": {"source": "web"}})["journeys_matched"] == 1
    assert post({"user_id": "u2", "event_type": "signup", "properties": {"source": "ios"}})["journeys_matched"] == 0
    assert post({"user_id": "u2", "event_type": "never_heard_of", "properties": {}})["journeys_matched"] == 0
    # Re-entry "once" (the default for event triggers): a second signup of u1 starts nothing.
    post({"user_id": "u1", "event_type": "signup", "properties": {"source": "web"}})
    drain(runtime)
    assert subjects(data_dir) == [("u1@example.com", "Welcome Ann")]
    assert client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]["runs"] == 1
    # Re-entry after N days: a run that started longer ago lets the recipient in again.
    client.patch(f"/api/journeys/{j['id']}/", json={"reentry": {"mode": "after", "days": 7}}, headers=a.headers)
    post({"user_id": "u1", "event_type": "signup", "properties": {"source": "web"}})
    assert client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]["runs"] == 1
    runtime.meta.execute("UPDATE journey_runs SET started_at = '2020-01-01T00:00:00.000000Z'")
    post({"user_id": "u1", "event_type": "signup", "properties": {"source": "web"}})
    assert client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]["runs"] == 2
    # The same event delivered twice (same event_id) starts one run at most.
    client.patch(f"/api/journeys/{j['id']}/", json={"reentry": {"mode": "always"}}, headers=a.headers)
    for _ in range(2):
        post({"user_id": "u3", "event_type": "signup", "event_id": "evt-1", "properties": {"source": "web"}})
    runs = client.get(f"/api/journeys/{j['id']}/runs/", headers=a.headers).json()
    assert sum(1 for r in runs["results"] if r["userId"] == "u3") == 1


def test_exit_condition_and_event_branch(client, setup, runtime, data_dir):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, status="active", trigger={"type": "event", "eventType": "cart_abandoned"},
                     steps=[{"id": "wait", "type": "wait", "duration": {"minutes": 30}},
                            {"id": "viewed?", "type": "branch", "condition": {"type": "event", "eventType": "viewed"},
                             "then": "nudge", "else": None},
                            {"id": "nudge", "type": "send_email", "templateId": welcome}],
                     exitCondition={"type": "event", "eventType": "order_placed"})
    post = lambda body: client.post("/api/events/", json=body, headers=a.headers)  # noqa: E731
    for user in ("u1", "u2", "u3"):
        post({"user_id": user, "event_type": "cart_abandoned"})
    drain(runtime)
    post({"user_id": "u1", "event_type": "order_placed"})  # exits before anything is sent
    post({"user_id": "u2", "event_type": "viewed"})        # takes the "then" branch
    fast_forward(runtime, j["id"])
    drain(runtime)
    assert subjects(data_dir) == [("u2@example.com", "Welcome Bob")]
    runs = {r["userId"]: r for r in client.get(f"/api/journeys/{j['id']}/runs/", headers=a.headers).json()["results"]}
    assert runs["u1"]["status"] == "exited" and runs["u1"]["exitReason"] == "exit condition met"
    assert runs["u2"]["status"] == "completed" and runs["u3"]["status"] == "completed"
    assert [s["stepId"] for s in runs["u3"]["steps"]] == ["wait", "viewed?"]


def test_unsubscribed_recipients_are_skipped_and_counted(client, setup, runtime, data_dir):
    a, welcome, pro, free = setup
    client.put("/api/recipients/subscription/", json={"userId": "u2", "topic": "marketing", "status": "unsubscribed"},
               headers=a.headers)
    j = make_journey(client, a.headers, status="active", trigger={"type": "api"},
                     steps=[{"id": "hello", "type": "send_email", "templateId": welcome}])
    for user in ("u1", "u2", "u3"):
        client.post(f"/api/journeys/{j['id']}/trigger/", json={"userId": user}, headers=a.headers)
    drain(runtime)
    stats = client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]
    assert stats["sentCount"] == 2 and stats["skippedUnsubscribedCount"] == 1 and stats["completedRuns"] == 3
    assert sorted(m["To"] for m in outbox(data_dir)) == ["u1@example.com", "u3@example.com"]


def test_pause_holds_runs_and_archive_exits_them(client, setup, runtime, data_dir):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, status="active", trigger={"type": "api"}, steps=_steps(welcome, pro, free))
    run = client.post(f"/api/journeys/{j['id']}/trigger/", json={"userId": "u1"}, headers=a.headers).json()
    client.patch(f"/api/journeys/{j['id']}/", json={"status": "paused"}, headers=a.headers)
    drain(runtime)
    assert outbox(data_dir) == []
    client.patch(f"/api/journeys/{j['id']}/", json={"status": "active"}, headers=a.headers)
    drain(runtime)
    assert len(outbox(data_dir)) == 1
    client.delete(f"/api/journeys/{j['id']}/", headers=a.headers)
    fast_forward(runtime, j["id"])
    drain(runtime)
    after = client.get(f"/api/journeys/{j['id']}/runs/{run['id']}/", headers=a.headers).json()
    assert after["status"] == "exited" and after["exitReason"] == "journey archived"
    assert len(outbox(data_dir)) == 1


def test_wait_until_time_of_day_uses_the_profile_timezone(client, setup, runtime):
    a, welcome, pro, free = setup
    j = make_journey(client, a.headers, status="active", trigger={"type": "api"},
                     steps=[{"id": "nine", "type": "wait", "untilTimeOfDay": "09:00"},
                            {"id": "hello", "type": "send_email", "templateId": welcome}])
    run = client.post(f"/api/journeys/{j['id']}/trigger/", json={"userId": "u1"}, headers=a.headers).json()
    drain(runtime)
    wake = client.get(f"/api/journeys/{j['id']}/runs/{run['id']}/", headers=a.headers).json()["wakeAt"]
    moment = datetime.fromisoformat(wake.replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0)
    assert moment > datetime.now(UTC) and (moment - datetime.now(UTC)).total_seconds() <= 86400


def test_next_time_of_day_across_dst_and_bad_zones():
    # 2026-03-29: Europe/Paris springs forward at 02:00 (UTC+1 -> UTC+2).
    before = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)  # 11:00 Paris, past 09:00 -> next day
    assert next_time_of_day(before, "09:00", "Europe/Paris") == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    early = datetime(2026, 3, 28, 6, 0, tzinfo=UTC)    # 07:00 Paris -> same day 09:00 = 08:00 UTC
    assert next_time_of_day(early, "09:00", "Europe/Paris") == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    assert next_time_of_day(early, "09:00", "Not/AZone") == datetime(2026, 3, 28, 9, 0, tzinfo=UTC)
    assert next_time_of_day(early, "06:00", None) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_segment_entry_triggers_runs_for_entered_recipients_only(client, setup, runtime, data_dir):

    a, welcome, pro, free = setup
    segment = client.post("/api/segments/", json={"name": "Pro", "segment_type": "rule", "definition": {
        "logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}]}},
                          headers=a.headers).json()
    j = make_journey(client, a.headers, status="active", trigger={"type": "segment", "segmentId": segment["id"]},
                     steps=[{"id": "hello", "type": "send_email", "templateId": pro}])
    client.post(f"/api/segments/{segment['id']}/compute/", headers=a.headers)
    runtime.compute.run_pending()
    drain(runtime)
    assert subjects(data_dir) == [("u1@example.com", "Pro tips for Ann"), ("u3@example.com", "Pro tips for Cy")]
    profiles(runtime, a.tenant_id, {"u2": {"plan": "pro"}})  # u2 enters on the next computation
    client.post(f"/api/segments/{segment['id']}/compute/", headers=a.headers)
    runtime.compute.run_pending()
    drain(runtime)
    assert [to for to, _ in subjects(data_dir)] == ["u1@example.com", "u2@example.com", "u3@example.com"]
    assert client.get(f"/api/journeys/{j['id']}/", headers=a.headers).json()["stats"]["runs"] == 3


def test_a_key_without_allow_sends_drafts_but_cannot_make_a_journey_send(client, setup, runtime, data_dir):
    """allowSends=false (an agent's key): drafting, editing drafts, pausing and archiving are fine;
    anything that would make a journey send is 403 ``sends_not_allowed`` and changes nothing."""
    a, welcome, pro, free = setup
    agent = a.key_headers("journeys:read", "journeys:write")
    steps = _steps(welcome, pro, free)

    def refused(r):
        assert r.status_code == 403 and r.json()["code"] == "sends_not_allowed" and "allow_sends" in r.json(), r.text

    refused(client.post("/api/journeys/", json={"name": "x", "status": "active", "trigger": {"type": "api"},
                                                "steps": steps}, headers=agent))
    assert client.get("/api/journeys/", headers=a.headers).json()["count"] == 0
    draft = make_journey(client, agent, trigger={"type": "api"}, steps=steps)
    edited = client.patch(f"/api/journeys/{draft['id']}/", json={"steps": steps[:1]}, headers=agent)
    assert edited.status_code == 200 and edited.json()["version"] == 2
    refused(client.patch(f"/api/journeys/{draft['id']}/", json={"status": "active"}, headers=agent))
    assert client.get(f"/api/journeys/{draft['id']}/", headers=a.headers).json()["status"] == "draft"

    # A human (or a send-enabled key) activates; the agent may pause and rename, not resume or re-route.
    client.patch(f"/api/journeys/{draft['id']}/", json={"status": "active", "steps": steps}, headers=a.headers)
    refused(client.post(f"/api/journeys/{draft['id']}/trigger/", json={"userId": "u1"}, headers=agent))
    refused(client.patch(f"/api/journeys/{draft['id']}/", json={"steps": steps[3:]}, headers=agent))
    renamed = client.patch(f"/api/journeys/{draft['id']}/", json={"name": "renamed"}, headers=agent).json()
    assert renamed["status"] == "active" and renamed["version"] == 3
    assert client.patch(f"/api/journeys/{draft['id']}/", json={"status": "paused"}, headers=agent).status_code == 200
    refused(client.patch(f"/api/journeys/{draft['id']}/", json={"status": "active"}, headers=agent))
    assert client.get(f"/api/journeys/{draft['id']}/", headers=a.headers).json()["status"] == "paused"
    drain(runtime)
    assert outbox(data_dir) == [] and runtime.meta.query_one("SELECT count(*) FROM journey_runs")[0] == 0

    # A journey whose steps cannot send is the agent's to run.
    quiet = make_journey(client, agent, status="active", trigger={"type": "api"},
                         steps=[{"id": "w", "type": "wait", "duration": {"minutes": 5}}, {"id": "e", "type": "exit"}])
    assert client.post(f"/api/journeys/{quiet['id']}/trigger/", json={"userId": "u1"}, headers=agent).status_code == 202
    assert client.delete(f"/api/journeys/{draft['id']}/", headers=agent).json()["status"] == "archived"

    # The control: the same trigger with allow_sends sends.
    sender = make_journey(client, a.headers, status="active", trigger={"type": "api"}, steps=steps[:1])
    assert client.post(f"/api/journeys/{sender['id']}/trigger/", json={"userId": "u1"},
                       headers=a.headers).status_code == 202
    drain(runtime)
    assert subjects(data_dir) == [("u1@example.com", "Welcome Ann")]


def test_every_step_type_says_whether_it_sends():
    """The allow_sends gate asks the step types; a step type that does not say cannot be defined."""
    from api.models.journeys import STEP_TYPES, StepModel

    assert {name for name, cls in STEP_TYPES.items() if cls.sends} == {"send_email"}
    with pytest.raises(TypeError, match="sends"):
        class Webhook(StepModel):  # noqa: F841
            type: str = "webhook"
