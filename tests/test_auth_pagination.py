"""Offset pagination (through GET /api/keys/) and the opaque cursor helpers."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import ApiError
from api.pagination import decode_cursor, encode_cursor

pytest_plugins = ["tests.api_fixtures"]


def test_offset_pages_link_absolute_urls(client, tenant_a):
    expected = {tenant_a.api_key_id}
    for i in range(6):
        r = client.post("/api/keys/", headers=tenant_a.headers, json={"name": f"k{i}", "scopes": ["segments:read"]})
        expected.add(r.json()["id"])

    first = client.get("/api/keys/?limit=3", headers=tenant_a.headers).json()
    assert first["count"] == 7 and first["previous"] is None
    assert first["next"] == "http://testserver/api/keys/?limit=3&offset=3"

    seen, url, pages = [], "/api/keys/?limit=3", 0
    while url:
        page = client.get(url, headers=tenant_a.headers).json()
        seen += [row["id"] for row in page["results"]]
        url, pages = page["next"], pages + 1
    assert pages == 3 and len(seen) == 7 and set(seen) == expected

    middle = client.get("/api/keys/?limit=3&offset=4", headers=tenant_a.headers).json()
    assert middle["previous"] == "http://testserver/api/keys/?limit=3&offset=1"
    second = client.get("/api/keys/?offset=3&limit=3", headers=tenant_a.headers).json()
    assert second["previous"] == "http://testserver/api/keys/?limit=3"
    assert len(client.get("/api/keys/", headers=tenant_a.headers).json()["results"]) == 7  # default 50


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=1001", "limit"), ("offset=-1", "offset"),
                                         ("limit=ten", "limit")])
def test_bad_page_params_are_400(client, tenant_a, query, field):
    r = client.get(f"/api/keys/?{query}", headers=tenant_a.headers)
    assert r.status_code == 400 and field in r.json()


def test_cursor_matches_the_seed_example():
    # segops-api-overview: "next_cursor": "dXNlci01Njc4" continues after user-5678
    assert encode_cursor("user-5678") == "dXNlci01Njc4"
    assert decode_cursor("dXNlci01Njc4") == "user-5678"


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=10)


@given(json_values)
def test_cursor_round_trips(value):
    cursor = encode_cursor(value)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if cursor:
        assert decode_cursor(cursor) == value


@pytest.mark.parametrize("cursor", ["!!!", "a", "AA", "a b", base64.urlsafe_b64encode(b"\x00{nope").decode(),
                                    base64.urlsafe_b64encode(b"\xff\xfe").decode()])
def test_bad_cursor_is_400_invalid_cursor(cursor):
    with pytest.raises(ApiError) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 400 and caught.value.body()["code"] == "invalid_cursor"
    assert "cursor" in caught.value.body()
