"""Templates over HTTP: CRUD, archive, duplicate, merge-field report, sandboxing, tenancy."""
from __future__ import annotations

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

from tests.sends_fixtures import make_template, profiles  # noqa: E402


def test_create_read_list_update(client, tenants):
    a = tenants.a
    created = make_template(client, a.headers, dataVariables=["order_id"],
                            text="Order {{ order_id }} for {{ first_name }}")
    assert created["purpose"] == "marketing" and created["version"] == 1
    assert created["dataVariables"] == ["order_id"]
    got = client.get(f"/api/templates/{created['id']}/", headers=a.headers).json()
    assert got == created

    updated = client.patch(f"/api/templates/{created['id']}/", json={"subject": "New {{ order_id }}"},
                           headers=a.headers)
    assert updated.status_code == 200
    assert updated.json()["subject"] == "New {{ order_id }}" and updated.json()["version"] == 2
    # A change of name only is not a new content version.
    renamed = client.patch(f"/api/templates/{created['id']}/", json={"name": "Renamed"}, headers=a.headers).json()
    assert renamed["version"] == 2 and renamed["name"] == "Renamed"

    make_template(client, a.headers, name="Receipt", purpose="transactional")
    listing = client.get("/api/templates/?limit=1", headers=a.headers).json()
    assert listing["count"] == 2 and len(listing["results"]) == 1 and listing["next"]
    only_tx = client.get("/api/templates/?purpose=transactional", headers=a.headers).json()
    assert [t["name"] for t in only_tx["results"]] == ["Receipt"]


def test_unknown_merge_fields_are_reported_against_traits_and_data_variables(client, tenants, runtime):
    a = tenants.a
    profiles(runtime, a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "Ann", "plan": "pro"}})
    created = make_template(client, a.headers, subject="{{ first_name }} / {{ plan }} / {{ coupon }}",
                            text="{{ missing_trait }} {{ order_id }} {{ unsubscribe_url }} {{ profile.x }}",
                            dataVariables=["order_id"])
    assert created["unknownMergeFields"] == ["coupon", "missing_trait"]
    # Declaring the variable clears the report.
    fixed = client.patch(f"/api/templates/{created['id']}/", json={"dataVariables": ["order_id", "coupon",
                                                                                      "missing_trait"]},
                         headers=a.headers).json()
    assert fixed["unknownMergeFields"] == []


def test_syntax_error_names_the_part_and_line(client, tenants):
    r = client.post("/api/templates/", json={"name": "x", "subject": "ok", "html": "<p>\n{{ broken </p>"},
                    headers=tenants.a.headers)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "template_syntax_error" and "html" in body and "line 2" in body["detail"]


def test_validation_errors_use_camel_case_paths(client, tenants):
    h = tenants.a.headers
    r = client.post("/api/templates/", json={"name": "x", "subject": "s", "text": "t", "purpose": "spam"}, headers=h)
    assert r.status_code == 400 and "purpose" in r.json()
    r = client.post("/api/templates/", json={"name": "x", "subject": "s", "text": "t", "dataVariables": ["a b"]},
                    headers=h)
    assert r.status_code == 400 and r.json()["code"] == "invalid_data_variable" and "dataVariables[0]" in r.json()
    r = client.post("/api/templates/", json={"name": "x", "subject": "s"}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "required"
    r = client.post("/api/templates/", json={"name": "x", "subject": "s", "text": "t", "brandKitId": 999},
                    headers=h)
    assert r.status_code == 400 and r.json()["code"] == "brand_kit_not_found"


def test_duplicate_archive_unarchive(client, tenants):
    h = tenants.a.headers
    t = make_template(client, h)
    dup = client.post(f"/api/templates/{t['id']}/duplicate/", json={}, headers=h)
    assert dup.status_code == 201
    assert dup.json()["id"] != t["id"] and dup.json()["name"] == "Welcome (copy)"
    assert dup.json()["html"] == t["html"]
    archived = client.post(f"/api/templates/{t['id']}/archive/", headers=h).json()
    assert archived["archived"] and archived["archivedAt"]
    assert client.patch(f"/api/templates/{t['id']}/", json={"name": "n"}, headers=h).status_code == 409
    active = client.get("/api/templates/?archived=false", headers=h).json()
    assert [x["id"] for x in active["results"]] == [dup.json()["id"]]
    restored = client.post(f"/api/templates/{t['id']}/unarchive/", headers=h).json()
    assert not restored["archived"]


def test_preview_renders_sandboxed_and_escapes_html(client, tenants, runtime):
    h = tenants.a.headers
    profiles(runtime, tenants.a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "<b>Ann</b>"}})
    t = make_template(client, h, dataVariables=["n"], text="{{ first_name }} {{ n * 2 }}")
    r = client.post(f"/api/templates/{t['id']}/preview/", json={"userId": "u1", "dataVariables": {"n": 21}},
                    headers=h).json()
    assert "&lt;b&gt;Ann&lt;/b&gt;" in r["html"]          # HTML part escapes merge values
    assert r["text"] == "<b>Ann</b> 42"                    # text part does not
    evil = make_template(client, h, name="evil", text="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    r = client.post(f"/api/templates/{evil['id']}/preview/", json={}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "template_render_error"
    assert "SecurityError" in r.json()["detail"]


def test_tenant_isolation_and_scopes(client, tenants):
    a, b = tenants.a, tenants.b
    t = make_template(client, a.headers)
    assert client.get(f"/api/templates/{t['id']}/", headers=b.headers).status_code == 404
    assert client.patch(f"/api/templates/{t['id']}/", json={"name": "x"}, headers=b.headers).status_code == 404
    assert client.get("/api/templates/", headers=b.headers).json()["count"] == 0
    read_only = a.key_headers("templates:read")
    assert client.get("/api/templates/", headers=read_only).status_code == 200
    r = client.post("/api/templates/", json={"name": "x", "subject": "s", "text": "t"}, headers=read_only)
    assert r.status_code == 403 and r.json()["code"] == "missing_scope"
    assert client.get("/api/templates/", headers={}).status_code == 401
