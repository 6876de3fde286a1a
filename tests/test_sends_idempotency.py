"""Idempotency-Key on creating POSTs: replay, mismatch, in-progress, and 20 concurrent requests
with one key handing off exactly one email."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from common.time import db_time, utc_now
from tests.sends_fixtures import make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]


def test_replay_same_body_and_reject_different_body(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, {"u1": {"email": "u1@example.com"}})
    t = make_template(client, a.headers)
    headers = {**a.headers, "Idempotency-Key": "order-1001"}
    first = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=headers)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # Same body with keys in another order: same request.
    again = client.post("/api/emails/", content=f'{{"userId": "u1", "templateId": {t["id"]}}}',
                        headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(outbox(data_dir)) == 1
    different = client.post("/api/emails/", json={"templateId": t["id"], "to": "x@example.com"}, headers=headers)
    assert different.status_code == 422 and different.json()["code"] == "idempotency_key_reused"
    # Keys are per tenant: tenant B may use the same key for its own request.
    tb = make_template(client, tenants.b.headers)
    other = client.post("/api/emails/", json={"templateId": tb["id"], "to": "b@example.com"},
                        headers={**tenants.b.headers, "Idempotency-Key": "order-1001"})
    assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers


def test_client_errors_are_replayed_and_keys_expire_after_retention(client, tenants, runtime):
    a = tenants.a
    headers = {**a.headers, "Idempotency-Key": "k-err"}
    body = {"templateId": 999, "to": "x@example.com"}
    first = client.post("/api/emails/", json=body, headers=headers)
    assert first.status_code == 400
    replay = client.post("/api/emails/", json=body, headers=headers)
    assert replay.status_code == 400 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    row = runtime.meta.query_one("SELECT created_at, expires_at FROM idempotency_keys WHERE key = 'k-err'")
    assert row["expires_at"] >= db_time(utc_now() + timedelta(hours=23, minutes=59))
    runtime.meta.execute("UPDATE idempotency_keys SET expires_at = ? WHERE key = 'k-err'",
                         (db_time(utc_now() - timedelta(seconds=1)),))
    fresh = client.post("/api/emails/", json=body, headers=headers)
    assert fresh.status_code == 400 and "Idempotent-Replayed" not in fresh.headers
    bad_key = client.post("/api/emails/", json=body, headers={**a.headers, "Idempotency-Key": "x" * 300})
    assert bad_key.status_code == 400 and bad_key.json()["code"] == "invalid_idempotency_key"


def test_in_progress_key_answers_409(client, tenants, runtime):
    a = tenants.a
    t = make_template(client, a.headers)
    store = runtime.sends.idempotency
    from engagement.idempotency import fingerprint

    body = {"name": "T2", "subject": "s", "text": "t"}
    fp = fingerprint("POST", "/api/templates/", body)
    assert store.begin(a.tenant_id, "busy", fp) is None  # another request holds the key
    r = client.post("/api/templates/", json=body, headers={**a.headers, "Idempotency-Key": "busy"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_in_progress" and r.headers["Retry-After"]
    store.release(a.tenant_id, "busy")
    ok = client.post("/api/templates/", json=body, headers={**a.headers, "Idempotency-Key": "busy"})
    assert ok.status_code == 201 and ok.json()["id"] != t["id"]


def test_twenty_concurrent_requests_with_one_key_send_exactly_once(app, tenants, runtime, data_dir, client):
    a = tenants.a
    profiles(runtime, a.tenant_id, {"u1": {"email": "u1@example.com"}})
    t = make_template(client, a.headers)
    headers = {**a.headers, "Idempotency-Key": "webhook-retry-storm"}

    async def storm():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await asyncio.gather(*(
                http.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=headers)
                for _ in range(20)))

    responses = asyncio.run(storm())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = [r.json() for r in responses if r.status_code == 201]
    assert created and all(c["id"] == created[0]["id"] for c in created)
    assert sum(1 for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers) == 1
    assert len(outbox(data_dir)) == 1
    assert runtime.meta.query_one("SELECT count(*) FROM email_sends")[0] == 1
    # Once finished, every retry replays the one send.
    late = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=headers)
    assert late.status_code == 201 and late.json()["id"] == created[0]["id"]
