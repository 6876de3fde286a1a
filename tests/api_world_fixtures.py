"""One resource of every kind in a tenant, created through the API, for cross-cutting API tests
(tenancy matrix, scopes, schemathesis).

``build_resources(client, runtime, creds)`` returns ``{path or query parameter name: value}``
for the tenant, e.g. ``{"segment_id": 3, "version": 1, "job_id": 2, "export_id": 1, ...}``,
so a route's path can be filled from its parameter names. Events and profiles go into the
lake directly (the fastest way; the ingest route has its own tests); everything else is
created over HTTP with the tenant's full-scope key, and background work (compute, export,
journey/send worker) is run in the calling thread.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import orjson
import pyarrow as pa

from common.time import naive_utc_now as utc_now

USER_ID = "world-user"
EMAIL = "world-user@example.com"
DEFINITION = {"logic": "AND", "conditions": [
    {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1}]}


def _ok(response, status: int = 201) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def seed_lake(runtime, tenant_id: int, user_id: str = USER_ID) -> None:
    """One order and one profile (with an email, so sends can address the user)."""
    now = utc_now()
    runtime.lake.append_events(tenant_id, pa.table({
        "event_id": [uuid.uuid4().hex],
        "tenant_id": pa.array([tenant_id], pa.int64()),
        "user_id": [user_id],
        "event_type": ["order_placed"],
        "occurred_at": pa.array([now - timedelta(days=1)], pa.timestamp("us")),
        "received_at": pa.array([now], pa.timestamp("us")),
        "properties": [orjson.dumps({"total": 42.5}).decode()],
    }))
    runtime.lake.upsert_profiles(tenant_id, [{"user_id": user_id, "updated_at": datetime(2026, 1, 1),
                                              "traits": {"email": EMAIL, "first_name": "World", "plan": "pro"}}])


def build_resources(client, runtime, creds, user_id: str = USER_ID) -> dict[str, object]:
    """Every kind of resource of ``creds``'s tenant; returns parameter name -> value.
    ``user_id`` is the one profile (give each tenant its own to test that profiles are tenant-scoped)."""
    h = creds.headers
    seed_lake(runtime, creds.tenant_id, user_id)
    ids: dict[str, object] = {"user_id": user_id}

    segment = _ok(client.post("/api/segments/", json={"name": "World", "segment_type": "rule",
                                                       "definition": DEFINITION}, headers=h))
    ids["segment_id"], ids["version"] = segment["id"], segment["version"]
    ids["job_id"] = _ok(client.post(f"/api/segments/{segment['id']}/compute/", headers=h), 202)["job_id"]
    runtime.compute.run_pending()
    ids["export_id"] = _ok(client.post(f"/api/segments/{segment['id']}/export/", json={"format": "csv"},
                                       headers=h), 202)["export_id"]
    runtime.exports.run_pending()

    ids["key_id"] = _ok(client.post("/api/keys/", json={"name": "world", "scopes": ["segments:read"]},
                                    headers=h))["id"]
    ids["kit_id"] = _ok(client.post("/api/brand-kits/", json={"name": "World kit"}, headers=h))["id"]
    template = _ok(client.post("/api/templates/", json={
        "name": "World", "subject": "Hi {{ first_name }}", "html": "<p>Hi {{ first_name }}</p>",
        "text": "Hi {{ first_name }}", "purpose": "transactional"}, headers=h))
    ids["template_id"] = template["id"]
    ids["asset_id"] = _ok(client.post("/api/assets/", json={
        "url": "https://cdn.example.com/logo.png", "name": "Logo", "contentType": "image/png"}, headers=h))["id"]
    journey = _ok(client.post("/api/journeys/", json={"name": "World", "status": "active", "trigger": {"type": "api"},
                                                      "steps": [{"id": "done", "type": "exit"}]}, headers=h))
    ids["journey_id"] = journey["id"]
    ids["run_id"] = _ok(client.post(f"/api/journeys/{journey['id']}/trigger/", json={"userId": user_id},
                                    headers=h), 202)["id"]
    ids["send_id"] = _ok(client.post("/api/emails/", json={"templateId": template["id"], "userId": user_id},
                                     headers=h))["id"]
    ids["broadcast_id"] = _ok(client.post("/api/broadcasts/prepare/", json={
        "templateId": template["id"], "audience": {"segmentId": segment["id"]}}, headers=h))["id"]
    return ids
