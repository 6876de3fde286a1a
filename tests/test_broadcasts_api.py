"""Broadcasts over HTTP: prepare (frozen audience + template, 15-minute expiry), redeem,
allowSends gating, expiry, cancel mid-send, legacy one-shot, progress counts."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.time import db_time, utc_now
from tests.sends_fixtures import drain, make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

PRO = {"logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}]}


@pytest.fixture
def audience(client, tenants, runtime):
    """12 pro users (one without an email) and 5 free ones; a computed segment of the pro users."""
    a = tenants.a
    users = {f"p{i:02d}": {"email": f"p{i:02d}@example.com", "plan": "pro", "first_name": f"P{i}"} for i in range(11)}
    users["p99"] = {"plan": "pro"}
    users.update({f"f{i}": {"email": f"f{i}@example.com", "plan": "free"} for i in range(5)})
    profiles(runtime, a.tenant_id, users)
    segment = client.post("/api/segments/", json={"name": "Pro", "segment_type": "rule", "definition": PRO},
                          headers=a.headers).json()
    assert client.post(f"/api/segments/{segment['id']}/compute/", headers=a.headers).status_code == 202
    runtime.compute.run_pending()
    template = make_template(client, a.headers, subject="News for {{ first_name }}")
    return a, segment["id"], template["id"]


def test_prepare_then_redeem_sends_to_the_segment_minus_unsubscribed(client, audience, data_dir):
    a, segment_id, template_id = audience
    client.put("/api/recipients/subscription/", json={"email": "p03@example.com", "status": "unsubscribed"},
               headers=a.headers)
    before = datetime.now(UTC)
    prepared = client.post("/api/broadcasts/prepare/", json={"templateId": template_id,
                                                             "audience": {"segmentId": segment_id}}, headers=a.headers)
    assert prepared.status_code == 201, prepared.text
    p = prepared.json()
    assert p["status"] == "prepared" and p["audienceSize"] == 12
    assert [s["userId"] for s in p["sample"]] == ["p00", "p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08",
                                                  "p09"]
    assert p["sample"][0]["email"] == "p00@example.com"
    expires = datetime.fromisoformat(p["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=14, seconds=58) <= expires - before <= timedelta(minutes=15, seconds=1)
    assert outbox(data_dir) == []  # a dry run sends nothing

    sent = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    assert sent.status_code == 202 and sent.json()["status"] == "sending"
    drain(client.app.state.runtime)
    progress = client.get(f"/api/broadcasts/{p['id']}/", headers=a.headers).json()
    assert progress["status"] == "sent" and progress["completedAt"]
    assert progress["progress"] == {"sentCount": 10, "skippedUnsubscribedCount": 1, "suppressedCount": 0,
                                    "failedCount": 1, "cancelledCount": 0, "pendingCount": 0}
    recipients = sorted(m["To"] for m in outbox(data_dir))
    assert recipients == [f"p{i:02d}@example.com" for i in range(11) if i != 3]
    assert all(m["Subject"] == f"News for P{int(m['To'][1:3])}" for m in outbox(data_dir))
    again = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    assert again.status_code == 409 and again.json()["code"] == "not_prepared"
    failed = client.get("/api/emails/?status=failed", headers=a.headers).json()["results"]
    assert [(f["userId"], f["error"]) for f in failed] == [("p99", "the recipient has no valid email address")]


def test_frozen_audience_ignores_later_changes_to_the_segment(client, audience, runtime, data_dir):
    a, segment_id, template_id = audience
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                    headers=a.headers).json()
    profiles(runtime, a.tenant_id, {"f0": {"plan": "pro"}})  # f0 joins the segment after the prepare
    client.post(f"/api/segments/{segment_id}/compute/", headers=a.headers)
    runtime.compute.run_pending()
    client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    drain(runtime)
    assert "f0@example.com" not in {m["To"] for m in outbox(data_dir)}
    assert len(outbox(data_dir)) == 11


def test_allow_sends_false_can_prepare_but_not_redeem(client, audience):
    a, segment_id, template_id = audience
    agent = a.key_headers("broadcasts:read", "broadcasts:write", "sends:write", allow_sends=False)
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                    headers=agent)
    assert p.status_code == 201
    r = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p.json()["id"]}, headers=agent)
    assert r.status_code == 403 and r.json()["code"] == "sends_not_allowed"
    legacy = client.post("/api/broadcasts/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                         headers=agent)
    assert legacy.status_code == 403
    ok = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p.json()["id"]}, headers=a.headers)
    assert ok.status_code == 202


def test_expired_prepared_send_answers_410(client, audience, runtime):
    a, segment_id, template_id = audience
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                    headers=a.headers).json()
    runtime.meta.execute("UPDATE broadcasts SET expires_at = ? WHERE id = ?",
                         (db_time(utc_now() - timedelta(seconds=1)), p["id"]))
    assert client.get(f"/api/broadcasts/{p['id']}/", headers=a.headers).json()["status"] == "expired"
    r = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    assert r.status_code == 410 and r.json()["code"] == "prepared_send_expired"


def test_inline_definition_audience_and_its_errors(client, audience, data_dir, runtime):
    a, _, template_id = audience
    free = {"logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "free"}]}
    r = client.post("/api/broadcasts/", json={"templateId": template_id, "audience": {"definition": free}},
                    headers={**a.headers, "Idempotency-Key": "legacy-1"})
    assert r.status_code == 202 and r.json()["audienceSize"] == 5 and r.json()["status"] == "sending"
    replay = client.post("/api/broadcasts/", json={"templateId": template_id, "audience": {"definition": free}},
                         headers={**a.headers, "Idempotency-Key": "legacy-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json()["id"] == r.json()["id"]
    drain(runtime)
    assert sorted(m["To"] for m in outbox(data_dir)) == [f"f{i}@example.com" for i in range(5)]
    bad = {"logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "bogus", "value": 1}]}
    r = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"definition": bad}},
                    headers=a.headers)
    assert r.status_code == 400 and any(k.startswith("audience.definition.conditions[0]") for k in r.json()), r.json()
    both = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {}}, headers=a.headers)
    assert both.status_code == 400


def test_cancel_stops_what_has_not_gone_out(client, audience, runtime, data_dir):
    a, segment_id, template_id = audience
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                    headers=a.headers).json()
    client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=a.headers)
    dispatcher = runtime.sends.dispatcher
    dispatcher.chunk = 4
    assert dispatcher.run_once() == 4  # four handed off, then the operator cancels
    mid = client.get(f"/api/broadcasts/{p['id']}/", headers=a.headers).json()
    assert mid["status"] == "sending" and mid["progress"]["sentCount"] == 4 and mid["progress"]["pendingCount"] == 8
    cancelled = client.post(f"/api/broadcasts/{p['id']}/cancel/", headers=a.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    drain(runtime)
    final = client.get(f"/api/broadcasts/{p['id']}/", headers=a.headers).json()["progress"]
    assert final["sentCount"] == 4 and final["cancelledCount"] == 8 and final["pendingCount"] == 0
    assert len(outbox(data_dir)) == 4
    assert client.post(f"/api/broadcasts/{p['id']}/cancel/", headers=a.headers).status_code == 409


def test_tenancy(client, audience, tenants):
    a, segment_id, template_id = audience
    b = tenants.b
    tb = make_template(client, b.headers)
    r = client.post("/api/broadcasts/prepare/", json={"templateId": tb["id"], "audience": {"segmentId": segment_id}},
                    headers=b.headers)
    assert r.status_code == 400 and r.json()["code"] == "segment_not_found"
    p = client.post("/api/broadcasts/prepare/", json={"templateId": template_id, "audience": {"segmentId": segment_id}},
                    headers=a.headers).json()
    assert client.get(f"/api/broadcasts/{p['id']}/", headers=b.headers).status_code == 404
    r = client.post("/api/broadcasts/send-prepared/", json={"preparedSendId": p["id"]}, headers=b.headers)
    assert r.status_code == 404
    assert client.get("/api/broadcasts/", headers=b.headers).json()["count"] == 0
