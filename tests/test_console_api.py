"""What the web console needs of the API, through the real app: the preview's ``dialect``, the tenant's
catalog, the console's files at ``/`` and offline ``/docs`` whose OpenAPI document names both credentials."""
from __future__ import annotations

import re

import pytest
import sqlglot

from api.routers.console import CONSOLE_DIST
from compiler import DIALECTS
from tests.segments_fixtures import AS_OF, SEED_DEFINITION, SEED_MEMBERS_A

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]


def preview(client, headers, **extra):
    return client.post("/api/segments/preview/", headers=headers, json={
        "definition": SEED_DEFINITION, "as_of": AS_OF.isoformat() + "Z", **extra})


@pytest.mark.parametrize("dialect", DIALECTS)
def test_preview_renders_the_sql_in_the_dialect_asked_for(client, tenant_a, world, dialect):
    response = preview(client, tenant_a.headers, dialect=dialect)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched_users"] == len(SEED_MEMBERS_A)  # the count never depends on the dialect
    sqlglot.parse_one(body["sql"], read=dialect)  # the text is that dialect's
    assert "order_placed" in body["sql"]


def test_the_default_dialect_is_duckdb_and_differs_from_others(client, tenant_a, world):
    default = preview(client, tenant_a.headers).json()["sql"]
    assert default == preview(client, tenant_a.headers, dialect="duckdb").json()["sql"]
    assert default != preview(client, tenant_a.headers, dialect="bigquery").json()["sql"]


def test_an_unknown_dialect_is_a_400_at_the_field(client, tenant_a, world):
    response = preview(client, tenant_a.headers, dialect="oracle")
    assert response.status_code == 400, response.text
    assert "dialect" in response.json() and response.json()["code"] == "validation_error"


def test_a_stored_version_previews_in_a_dialect_too(client, tenant_a, world):
    created = client.post("/api/segments/", headers=tenant_a.headers,
                          json={"name": "HVC", "definition": SEED_DEFINITION}).json()
    response = client.post(f"/api/segments/{created['id']}/versions/1/preview/", headers=tenant_a.headers,
                           json={"dialect": "snowflake", "as_of": AS_OF.isoformat() + "Z"})
    assert response.status_code == 200, response.text
    sqlglot.parse_one(response.json()["sql"], read="snowflake")


def test_the_catalog_lists_event_types_by_count_and_the_kinds_of_properties_and_traits(client, tenant_a, world):
    response = client.get("/api/catalog/", headers=tenant_a.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    # tests/segments_fixtures: tenant A has 9 orders (frank's future one included) and 6 page views
    assert body["event_types"] == [{"event_type": "order_placed", "count": 9},
                                   {"event_type": "page_viewed", "count": 6}]
    assert body["properties"] == [{"name": "path", "kind": "string"}, {"name": "total", "kind": "number"}]
    assert body["traits"] == [{"name": "age", "kind": "number"}, {"name": "plan", "kind": "string"}]


def test_the_catalog_is_the_callers_tenants(client, tenant_b, world):
    body = client.get("/api/catalog/", headers=tenant_b.headers).json()
    assert body["event_types"] == [{"event_type": "order_placed", "count": 2},
                                   {"event_type": "page_viewed", "count": 1}]
    assert [t["name"] for t in body["traits"]] == ["plan"]


def test_an_empty_tenant_has_an_empty_catalog(client, tenant_a):
    assert client.get("/api/catalog/", headers=tenant_a.headers).json() == {
        "event_types": [], "properties": [], "traits": []}


def test_the_catalog_needs_segments_read(client, tenant_a):
    response = client.get("/api/catalog/", headers=tenant_a.key_headers("profiles:read"))
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"


def test_docs_load_swagger_ui_from_the_server_only(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(url.startswith("/docs/static/") for url in urls), urls
    assert "/openapi.json" in page.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and asset.content, url
    assert client.get("/docs/static/index.html").status_code == 404  # only the files /docs uses
    assert client.get("/docs/static/..%2F..%2Fswagger_ui_bundle%2F__init__.py").status_code == 404


def test_the_openapi_document_names_both_credentials_for_authorize(client):
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["Bearer"] == {**schemes["Bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"ApiKey": []}, {"Bearer": []}]


def test_the_x_api_key_header_that_authorize_sends_is_accepted(client, tenant_a):
    key = tenant_a.key_headers("segments:read")["Authorization"].split(" ", 1)[1]
    assert client.get("/api/segments/", headers={"x-api-key": key}).status_code == 200


def test_the_console_is_served_at_the_root_with_its_assets(client):
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.text)
    assert assets, "the built index names its bundle"
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200 and "immutable" in response.headers["cache-control"], url
    # nothing but the server's own files
    assert not re.search(r'(?:src|href)="(?:https?:)?//', index.text)
    assert (CONSOLE_DIST / "index.html").is_file()


def test_console_assets_stay_inside_the_bundle(client):
    assert client.get("/assets/missing.js").status_code == 404
    assert client.get("/assets/..%2Findex.html").status_code == 404
    assert client.get("/assets/..%2F..%2Fapp.py").status_code == 404
