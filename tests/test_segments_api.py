"""Segments over HTTP: CRUD, versions, soft delete, validation paths, scopes, tenant isolation."""
from __future__ import annotations

import copy

import pytest

from tests.segments_fixtures import SEED_DEFINITION, create_segment

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]

SEED_BODY = {
    "name": "High-Value Churners",
    "segment_type": "rule",
    "description": "Users who spent ≥$500 but haven't returned in 30 days",
}
FREQUENT = {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 3, "window_days": 7}


def test_seed_create_then_patch_definition_then_read(client, tenant_a):
    body = {**SEED_BODY, "tenant": tenant_a.tenant_id}
    created = client.post("/api/segments/", json=body, headers=tenant_a.jwt_headers())
    assert created.status_code == 201, created.text
    segment = created.json()
    assert {k: segment[k] for k in ("name", "segment_type", "description")} == {
        k: SEED_BODY[k] for k in ("name", "segment_type", "description")}
    assert segment["definition"] is None and segment["version"] == 0 and segment["status"] == "draft"
    assert segment["compute_interval_minutes"] == 15
    assert segment["member_count"] is None and segment["last_computed_at"] is None
    assert segment["created_by"] == {"user_id": tenant_a.user_id, "api_key_id": None}
    assert segment["created_at"].endswith("Z") and segment["updated_at"].endswith("Z")

    patched = client.patch(f"/api/segments/{segment['id']}/", json={"definition": SEED_DEFINITION},
                           headers=tenant_a.jwt_headers())
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 1
    assert patched.json()["definition"] == SEED_DEFINITION
    assert patched.json()["status"] == "pending"

    fetched = client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()
    assert fetched == patched.json()


def test_each_definition_change_is_a_version_with_author_and_time(client, tenant_a):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    assert segment["version"] == 1
    url = f"/api/segments/{segment['id']}/"
    second = {"logic": "OR", "conditions": [FREQUENT]}
    assert client.patch(url, json={"definition": second}, headers=tenant_a.jwt_headers("editor")).json()["version"] == 2
    # the same definition again, and a metadata-only change, make no version
    assert client.patch(url, json={"definition": copy.deepcopy(second)}, headers=tenant_a.headers).json()["version"] == 2
    renamed = client.patch(url, json={"name": "Renamed", "compute_interval_minutes": 60}, headers=tenant_a.headers)
    assert renamed.json()["version"] == 2
    assert (renamed.json()["name"], renamed.json()["compute_interval_minutes"]) == ("Renamed", 60)

    versions = client.get(url + "versions/", headers=tenant_a.headers).json()
    assert versions["count"] == 2 and versions["next"] is None
    newest, oldest = versions["results"]
    assert (newest["version"], newest["definition"]) == (2, second)
    assert newest["author"] == {"user_id": tenant_a.user_ids["editor"], "api_key_id": None}
    assert (oldest["version"], oldest["definition"]) == (1, SEED_DEFINITION)
    assert oldest["author"] == {"user_id": None, "api_key_id": tenant_a.api_key_id}
    assert oldest["created_at"] <= newest["created_at"]
    assert client.get(url + "versions/1/", headers=tenant_a.headers).json() == oldest
    assert client.get(url + "versions/3/", headers=tenant_a.headers).status_code == 404


def test_invalid_definition_names_the_field_path(client, tenant_a):
    segment = create_segment(client, tenant_a.headers)
    bad = copy.deepcopy(SEED_DEFINITION)
    bad["conditions"][1]["operator"] = "within"
    response = client.patch(f"/api/segments/{segment['id']}/", json={"definition": bad}, headers=tenant_a.headers)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_operator"
    assert "definition.conditions[1].operator" in body
    assert body["detail"].startswith("definition.conditions[1].operator")
    # nothing was stored
    assert client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()["version"] == 0

    created = client.post("/api/segments/", json={**SEED_BODY, "definition": {"logic": "AND", "conditions": []}},
                          headers=tenant_a.headers)
    assert created.status_code == 400 and "definition.conditions" in created.json()

    unnamed = client.post("/api/segments/", json={"segment_type": "rule"}, headers=tenant_a.headers)
    assert unnamed.status_code == 400 and "name" in unnamed.json()
    for field, value in (("name", None), ("definition", None), ("compute_interval_minutes", 0)):
        response = client.patch(f"/api/segments/{segment['id']}/", json={field: value}, headers=tenant_a.headers)
        assert response.status_code == 400 and field in response.json(), (field, response.text)


def test_definition_value_types_are_checked_against_the_lake(client, tenant_a, world):
    """`total` is a number column in A's lake: comparing it with a string cannot be saved."""
    definition = {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1,
                  "where": [{"property": "total", "operator": "eq", "value": "500"}]}
    response = client.post("/api/segments/", json={**SEED_BODY, "definition": definition}, headers=tenant_a.headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_value_type"
    assert "definition.where[0].value" in response.json()


def test_property_not_seen_yet_can_be_saved(client, tenant_a):
    """A segment may be defined before its data arrives (computations report it meanwhile)."""
    definition = {"type": "monetary", "event_type": "order_placed", "property": "discount", "metric": "sum",
                  "operator": "gt", "value": 0}
    segment = create_segment(client, tenant_a.headers, definition)
    assert segment["definition"] == definition


def test_ai_and_lookalike_are_refused_clearly(client, tenant_a):
    for segment_type in ("ai", "lookalike"):
        response = client.post("/api/segments/", json={**SEED_BODY, "segment_type": segment_type},
                               headers=tenant_a.headers)
        assert response.status_code == 400
        assert response.json()["code"] == "segment_type_not_available"
        assert "segment_type" in response.json()
    unknown = client.post("/api/segments/", json={**SEED_BODY, "segment_type": "magic"}, headers=tenant_a.headers)
    assert unknown.status_code == 400 and "segment_type" in unknown.json()
    assert client.get("/api/segments/", headers=tenant_a.headers).json()["count"] == 0


def test_tenant_comes_from_the_credential(client, tenant_a, tenant_b):
    other = client.post("/api/segments/", json={**SEED_BODY, "tenant": tenant_b.tenant_id}, headers=tenant_a.headers)
    assert other.status_code == 404
    own = client.post("/api/segments/", json={**SEED_BODY, "tenant": tenant_a.tenant_id}, headers=tenant_a.headers)
    assert own.status_code == 201 and own.json()["tenant"] == tenant_a.tenant_id
    assert client.get("/api/segments/", headers=tenant_b.headers).json()["count"] == 0


def test_list_is_offset_paginated(client, tenant_a):
    ids = [create_segment(client, tenant_a.headers, name=f"s{i}")["id"] for i in range(5)]
    first = client.get("/api/segments/?limit=2", headers=tenant_a.headers).json()
    assert first["count"] == 5 and first["previous"] is None
    assert [s["id"] for s in first["results"]] == ids[:2]
    second = client.get(first["next"], headers=tenant_a.headers).json()
    assert [s["id"] for s in second["results"]] == ids[2:4]
    last = client.get(second["next"], headers=tenant_a.headers).json()
    assert [s["id"] for s in last["results"]] == ids[4:] and last["next"] is None


def test_soft_delete_then_404_everywhere(client, tenant_a):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    url = f"/api/segments/{segment['id']}/"
    assert client.delete(url, headers=tenant_a.headers).status_code == 204
    for method, path in (("get", url), ("patch", url), ("delete", url), ("get", url + "versions/"),
                         ("get", url + "versions/1/"), ("post", url + "compute/"), ("get", url + "jobs/")):
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        assert client.request(method, path, headers=tenant_a.headers, **kwargs).status_code == 404, (method, path)
    assert client.get("/api/segments/", headers=tenant_a.headers).json()["count"] == 0


def test_a_referenced_segment_cannot_be_deleted(client, tenant_a):
    base = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    ref = {"type": "segment", "segment_id": base["id"], "operator": "in"}
    user = create_segment(client, tenant_a.headers, ref, name="uses base")
    response = client.delete(f"/api/segments/{base['id']}/", headers=tenant_a.headers)
    assert response.status_code == 409 and response.json()["code"] == "segment_in_use"
    assert str(user["id"]) in response.json()["detail"]
    assert client.delete(f"/api/segments/{user['id']}/", headers=tenant_a.headers).status_code == 204
    assert client.delete(f"/api/segments/{base['id']}/", headers=tenant_a.headers).status_code == 204


def test_references_stay_within_the_tenant_and_cycles_are_refused(client, tenant_a, tenant_b):
    a_segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    ref = {"type": "segment", "segment_id": a_segment["id"], "operator": "in"}
    response = client.post("/api/segments/", json={**SEED_BODY, "definition": ref}, headers=tenant_b.headers)
    assert response.status_code == 400
    assert response.json()["code"] == "segment_not_found"
    assert "definition.segment_id" in response.json()

    b_ref = create_segment(client, tenant_a.headers, ref, name="refers to first")
    back = {"type": "segment", "segment_id": b_ref["id"], "operator": "not_in"}
    cycle = client.patch(f"/api/segments/{a_segment['id']}/", json={"definition": back}, headers=tenant_a.headers)
    assert cycle.status_code == 400 and cycle.json()["code"] == "segment_cycle"
    self_ref = {"type": "segment", "segment_id": a_segment["id"], "operator": "in"}
    response = client.patch(f"/api/segments/{a_segment['id']}/", json={"definition": self_ref},
                            headers=tenant_a.headers)
    assert response.status_code == 400 and response.json()["code"] == "segment_cycle"


def test_other_tenants_segments_answer_404(client, tenant_a, tenant_b, world):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    job = client.post(f"/api/segments/{segment['id']}/compute/", headers=tenant_a.headers).json()
    url = f"/api/segments/{segment['id']}/"
    requests = [
        ("get", url, None), ("patch", url, {"name": "stolen"}), ("delete", url, None),
        ("get", url + "versions/", None), ("get", url + "versions/1/", None),
        ("post", url + "versions/1/preview/", {}), ("post", url + "preview/", {}),
        ("post", url + "compute/", None), ("get", url + "jobs/", None),
        ("get", f"{url}jobs/{job['job_id']}/", None), ("get", f"/api/segments/jobs/{job['job_id']}/", None),
    ]
    for method, path, body in requests:
        response = client.request(method, path, headers=tenant_b.headers, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
    unchanged = client.get(url, headers=tenant_a.headers).json()
    assert unchanged["name"] == "High-Value Churners"
    for huge in ("/api/segments/99999999999999999999/", "/api/segments/0/"):
        assert client.get(huge, headers=tenant_a.headers).status_code == 404


@pytest.mark.parametrize("method,path,body", [
    ("post", "/api/segments/", SEED_BODY),
    ("patch", "/api/segments/{id}/", {"name": "x"}),
    ("delete", "/api/segments/{id}/", None),
    ("post", "/api/segments/{id}/compute/", None),
])
def test_writes_need_segments_write(client, tenant_a, method, path, body):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    path = path.format(id=segment["id"])
    for headers in (tenant_a.key_headers("segments:read"), tenant_a.jwt_headers("viewer")):
        response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "missing_scope"
    assert client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()["name"] == segment["name"]


def test_reads_need_segments_read(client, tenant_a, world):
    segment = create_segment(client, tenant_a.headers, SEED_DEFINITION)
    no_read = tenant_a.key_headers("events:write")
    reader = tenant_a.key_headers("segments:read")
    for method, path, body in (
        ("get", "/api/segments/", None), ("get", f"/api/segments/{segment['id']}/", None),
        ("get", f"/api/segments/{segment['id']}/versions/", None), ("get", "/api/segments/schema/", None),
        ("post", "/api/segments/preview/", {"definition": SEED_DEFINITION}),
    ):
        assert client.request(method, path, headers=no_read, json=body).status_code == 403, path
        assert client.request(method, path, headers=reader, json=body).status_code == 200, path
    assert client.get("/api/segments/").status_code == 401


def test_schema_endpoint_serves_the_definition_json_schema(client, tenant_a):
    schema = client.get("/api/segments/schema/", headers=tenant_a.headers).json()
    assert schema["$schema"].startswith("https://json-schema.org/")
    text = str(schema)
    for condition_type in ("frequency", "monetary", "recency", "first_seen", "trait", "sequence", "segment"):
        assert condition_type in text
