"""End to end over HTTP with every background worker running (ingest flusher, segment compute,
membership index, journey/send worker) and a real SMTP server (aiosmtpd) on 127.0.0.1."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings
from tests.sends_fixtures import make_template

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

PRO = {"logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}]}


def eventually(check, timeout: float = 45.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


@pytest.fixture
def live(data_dir, smtp_server, tenants):
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=True, smtp_url=smtp_server.url,
                               flush_interval=0.2, send_lease_seconds=5))
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        yield client, tenants.a, smtp_server
    runtime.meta.close()


def _identify_and_segment(client, a, users: dict[str, dict]) -> int:
    r = client.post("/api/events/identify/", json={"batch": [{"user_id": u, "traits": t} for u, t in users.items()]},
                    headers=a.headers)
    assert r.status_code == 202
    runtime = client.app.state.runtime
    eventually(lambda: runtime.lake.profiles_snapshot(a.tenant_id).rows == len(users))
    segment = client.post("/api/segments/", json={"name": "Pro", "segment_type": "rule", "definition": PRO},
                          headers=a.headers).json()
    client.post(f"/api/segments/{segment['id']}/compute/", headers=a.headers)
    eventually(lambda: client.get(f"/api/segments/{segment['id']}/", headers=a.headers).json().get("status") == "ready")
    return segment["id"]


def test_event_triggers_journey_that_waits_branches_on_segment_and_sends(live):
    client, a, smtp = live
    segment_id = _identify_and_segment(client, a, {
        "ann": {"email": "ann@example.com", "first_name": "Ann", "plan": "pro"},
        "bob": {"email": "bob@example.com", "first_name": "Bob", "plan": "free"}})
    vip = make_template(client, a.headers, name="vip", subject="VIP welcome, {{ first_name }}")
    std = make_template(client, a.headers, name="std", subject="Welcome, {{ first_name }}")
    journey = client.post("/api/journeys/", json={
        "name": "Onboarding", "status": "active", "trigger": {"type": "event", "eventType": "signup"},
        "steps": [{"id": "settle", "type": "wait", "duration": {"seconds": 2}},
                  {"id": "pro?", "type": "branch", "condition": {"type": "segment", "segmentId": segment_id},
                   "then": "vip", "else": "std"},
                  {"id": "vip", "type": "send_email", "templateId": vip["id"], "next": None},
                  {"id": "std", "type": "send_email", "templateId": std["id"]}]}, headers=a.headers).json()
    started = time.monotonic()
    r = client.post("/api/events/", json={"batch": [{"user_id": "ann", "event_type": "signup"},
                                                    {"user_id": "bob", "event_type": "signup"},
                                                    {"user_id": "bob", "event_type": "page_viewed"}]},
                    headers=a.headers)
    assert r.status_code == 202 and r.json()["journeys_matched"] == 1
    eventually(lambda: len(smtp.messages) == 2)
    assert time.monotonic() - started >= 2  # the wait was honoured
    got = sorted((m["To"], m["Subject"]) for m in smtp.parsed())
    assert got == [("ann@example.com", "VIP welcome, Ann"), ("bob@example.com", "Welcome, Bob")]
    runs = client.get(f"/api/journeys/{journey['id']}/runs/", headers=a.headers).json()["results"]
    by_user = {run["userId"]: run for run in runs}
    eventually(lambda: all(run["status"] == "completed" for run in
                           client.get(f"/api/journeys/{journey['id']}/runs/", headers=a.headers).json()["results"]))
    assert [s["stepId"] for s in by_user["ann"]["steps"]][:2] == ["settle", "pro?"]
    stats = client.get(f"/api/journeys/{journey['id']}/", headers=a.headers).json()["stats"]
    assert stats["sentCount"] == 2 and stats["completedRuns"] == 2
    time.sleep(0.5)
    assert len(smtp.messages) == 2  # nothing more


def test_broadcast_to_computed_segment_minus_unsubscribed(live):
    client, a, smtp = live
    users = {f"u{i:02d}": {"email": f"u{i:02d}@example.com", "plan": "pro" if i % 3 else "free"} for i in range(30)}
    segment_id = _identify_and_segment(client, a, users)
    members = sorted(u for u, t in users.items() if t["plan"] == "pro")
    unsubscribed = members[:3]
    for user in unsubscribed:
        client.put("/api/recipients/subscription/", json={"userId": user, "status": "unsubscribed"}, headers=a.headers)
    client.post("/api/recipients/feedback/", json={"type": "complaint", "email": users[members[3]]["email"]},
                headers=a.headers)
    template = make_template(client, a.headers, subject="Launch")
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template["id"],
                                                      "audience": {"segmentId": segment_id}}, headers=a.headers).json()
    assert p["audienceSize"] == len(members)
    client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    done = eventually(lambda: (b := client.get(f"/api/broadcasts/{p['id']}/", headers=a.headers).json())["status"]
                      == "sent" and b)
    expected = sorted(users[u]["email"] for u in members[4:])
    assert sorted(smtp.recipients()) == expected
    assert done["progress"] == {"sentCount": len(expected), "skippedUnsubscribedCount": 3, "suppressedCount": 1,
                                "failedCount": 0, "cancelledCount": 0, "pendingCount": 0}
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in smtp.parsed())
