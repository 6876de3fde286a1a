"""Request bodies are capped (SEGOPS_MAX_BODY_BYTES, 1 MiB by default) while they stream, except on
the routes that read theirs under a limit of their own (ingest 4 MB, asset uploads 10 MB)."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.ingest.parse import MAX_BATCH_BYTES
from engine.runtime import Runtime
from engine.settings import Settings

pytest_plugins = ["tests.api_fixtures"]

MIB = 1 << 20


def _segment_body(size: int) -> bytes:
    """A valid segment create body of ``size`` bytes (JSON may end in any amount of whitespace)."""
    doc = orjson.dumps({"name": "big", "segment_type": "rule"})
    return doc + b" " * (size - len(doc))


def _chunks(data: bytes, size: int = 64 << 10):
    """A generator body: httpx sends it chunked (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _assert_413(r, limit: int):
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["code"] == "payload_too_large" and str(limit) in body["detail"] and "body" in body
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_body_on_a_non_ingest_route_is_413_in_the_envelope(client, tenant_a, chunked):
    data = _segment_body(2 * MIB)
    content = _chunks(data) if chunked else data
    r = client.post("/api/segments/", content=content,
                    headers={**tenant_a.headers, "Content-Type": "application/json"})
    _assert_413(r, MIB)
    assert client.get("/api/segments/", headers=tenant_a.headers).json()["count"] == 0
    # just under the cap the same route works
    small = _segment_body(MIB)
    r = client.post("/api/segments/", content=_chunks(small) if chunked else small,
                    headers={**tenant_a.headers, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_the_cap_applies_before_authentication_and_to_any_method(client):
    # no credential at all: the oversized body is refused first, not read
    r = client.request("PATCH", "/api/segments/1/", content=b"x" * (MIB + 1),
                       headers={"Content-Type": "application/json"})
    _assert_413(r, MIB)


def test_ingest_keeps_its_own_4_mb_limit(client, tenant_a):
    events = []
    while sum(len(e) for e in events) < 2 * MIB:  # a valid 2 MiB batch: over the app's cap, under ingest's
        events.append(orjson.dumps({"user_id": f"u{len(events)}", "event_type": "page_viewed",
                                    "event_id": f"e{len(events)}", "properties": {"pad": "p" * 2000}}))
    body = b'{"batch": [' + b",".join(events) + b"]}"
    assert MIB < len(body) < MAX_BATCH_BYTES
    for content in (body, _chunks(body)):
        r = client.post("/api/events/", content=content, headers={**tenant_a.headers,
                                                                  "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
    # and over 4 MB it answers its own code, chunked or not
    huge = b'{"batch": [' + b",".join(events * 3) + b"]}"
    for content in (huge, _chunks(huge)):
        r = client.post("/api/events/", content=content, headers={**tenant_a.headers,
                                                                  "Content-Type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (413, "batch_too_large")


def test_asset_upload_keeps_its_own_limit(client, tenant_a):
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * (2 * MIB)
    session = client.post("/api/assets/uploads/", json={"filename": "big.png", "contentType": "image/png",
                                                       "size": len(data)}, headers=tenant_a.headers)
    assert session.status_code == 201, session.text
    path = "/api/assets/uploads/" + session.json()["upload"]["url"].split("/api/assets/uploads/", 1)[1]
    r = client.put(path, content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 204, r.text


def test_the_cap_is_a_setting(data_dir, tenants):
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False, max_body_bytes=1000))
    try:
        with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
            h = {**tenants.a.headers, "Content-Type": "application/json"}
            _assert_413(client.post("/api/segments/", content=_segment_body(2000), headers=h), 1000)
            assert client.post("/api/segments/", content=_segment_body(100), headers=h).status_code == 201
    finally:
        runtime.stop()


def test_a_chunked_body_is_cut_off_at_the_cap(app, tenant_a):
    """Driven as the server drives the app (ASGI messages): of an 8 MiB chunked body the app pulls
    the chunks up to the cap, then answers 413; it never reads the whole body into memory first."""
    chunk, chunks = b" " * (64 << 10), 128
    pulled, sent = 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/segments/", "raw_path": b"/api/segments/", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked"),
                         (b"authorization", tenant_a.headers["Authorization"].encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == "payload_too_large"
    assert pulled == MIB // len(chunk) + 1  # the chunk that crossed the cap is the last one read


def test_templates_at_their_largest_fit_under_their_own_cap(client, tenant_a):
    """A template's html and text may each hold 1,000,000 characters (the model's limit): the template
    routes' cap leaves room for both, non-ASCII included, and still refuses a larger body."""
    body = {"name": "huge", "subject": "Hi", "html": "é" * 1_000_000, "text": "t" * 1_000_000}
    r = client.post("/api/templates/", json=body, headers=tenant_a.headers)
    assert r.status_code == 201, r.text[:300]
    r = client.post("/api/templates/", content=_chunks(b" " * (17 * MIB)),
                    headers={**tenant_a.headers, "Content-Type": "application/json"})
    _assert_413(r, 16 * MIB)
