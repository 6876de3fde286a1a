"""Assets (upload session -> PUT -> finalize) on the embedded store and on a real S3 (moto)
server, and brand kits that use them."""
from __future__ import annotations

import struct
import zlib

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings

pytest_plugins = ["tests.api_fixtures", "tests.storage_fixtures", "tests.sends_fixtures"]


def png_bytes(width: int = 2, height: int = 1) -> bytes:
    """A valid PNG built from the spec (signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def s3_client(data_dir, s3_server, tenants):
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False, **s3_server.settings_overrides()))
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        yield client
    runtime.stop()


def _upload_flow(client, headers, put):
    data = png_bytes()
    r = client.post("/api/assets/uploads/", json={"filename": "logo.png", "contentType": "image/png",
                                                 "size": len(data), "altText": "Logo"}, headers=headers)
    assert r.status_code == 201, r.text
    session = r.json()
    asset, upload = session["asset"], session["upload"]
    assert asset["status"] == "pending" and asset["url"] is None and upload["method"] == "PUT"
    assert upload["expiresAt"].endswith("Z")
    # Finalizing before the bytes arrive is refused.
    early = client.post(f"/api/assets/{asset['id']}/finalize/", headers=headers)
    assert early.status_code == 409 and early.json()["code"] == "upload_missing"
    put(upload["url"], data, upload["headers"])
    done = client.post(f"/api/assets/{asset['id']}/finalize/", headers=headers)
    assert done.status_code == 200, done.text
    ready = done.json()
    assert ready["status"] == "ready" and ready["size"] == len(data) and ready["finalizedAt"]
    return ready, data


def test_local_upload_finalize_and_public_file(client, tenants):
    h = tenants.a.headers

    def put(url, data, headers):
        assert url.startswith("http://127.0.0.1:8000/api/assets/uploads/")
        path = url.split("8000", 1)[1]
        assert client.put(path, content=data, headers=headers).status_code == 204

    ready, data = _upload_flow(client, h, put)
    path = ready["url"].split("8000", 1)[1]
    served = client.get(path)  # public: no credential
    assert served.status_code == 200 and served.content == data
    assert served.headers["content-type"] == "image/png"
    listing = client.get("/api/assets/?status=ready", headers=h).json()
    assert [a["id"] for a in listing["results"]] == [ready["id"]]
    patched = client.patch(f"/api/assets/{ready['id']}/", json={"name": "Brand logo", "altText": "Our logo"},
                           headers=h).json()
    assert patched["name"] == "Brand logo" and patched["altText"] == "Our logo"
    assert client.get(f"/api/assets/{ready['id']}/", headers=tenants.b.headers).status_code == 404
    assert client.delete(f"/api/assets/{ready['id']}/", headers=h).status_code == 204
    assert client.get(f"/api/assets/{ready['id']}/", headers=h).status_code == 404
    assert client.get(path).status_code == 404


def test_local_upload_checks_type_size_and_token(client, tenants):
    h = tenants.a.headers
    data = png_bytes()
    session = client.post("/api/assets/uploads/", json={"filename": "a.png", "contentType": "image/png",
                                                       "size": len(data) + 5}, headers=h).json()
    path = session["upload"]["url"].split("8000", 1)[1]
    wrong_type = client.put(path, content=data, headers={"Content-Type": "image/gif"})
    assert wrong_type.status_code == 415 and wrong_type.json()["code"] == "content_type_mismatch"
    assert client.put(path, content=data, headers={"Content-Type": "image/png"}).status_code == 204
    short = client.post(f"/api/assets/{session['asset']['id']}/finalize/", headers=h)
    assert short.status_code == 422 and short.json()["code"] == "size_mismatch"
    assert client.put("/api/assets/uploads/not-a-token/", content=data,
                      headers={"Content-Type": "image/png"}).status_code == 404
    # Bytes that are not the declared image type.
    fake = b"GIF89a" + b"\x00" * 20
    s2 = client.post("/api/assets/uploads/", json={"filename": "b.png", "contentType": "image/png",
                                                  "size": len(fake)}, headers=h).json()
    client.put(s2["upload"]["url"].split("8000", 1)[1], content=fake, headers={"Content-Type": "image/png"})
    mislabelled = client.post(f"/api/assets/{s2['asset']['id']}/finalize/", headers=h)
    assert mislabelled.status_code == 422 and mislabelled.json()["code"] == "content_type_mismatch"
    bad = client.post("/api/assets/uploads/", json={"filename": "x.svg", "contentType": "image/svg+xml", "size": 10},
                      headers=h)
    assert bad.status_code == 400 and bad.json()["code"] == "unsupported_content_type"


def test_s3_presigned_upload_and_finalize(s3_client, tenants, s3_server):
    h = tenants.a.headers

    def put(url, data, headers):
        assert url.startswith(s3_server.endpoint_url)  # presigned straight to S3, not through us
        assert httpx.put(url, content=data, headers=headers).status_code == 200

    ready, data = _upload_flow(s3_client, h, put)
    served = s3_client.get(ready["url"].split("8000", 1)[1])
    assert served.status_code == 200 and served.content == data


def test_brand_kit_with_logo_and_default(client, tenants):
    h = tenants.a.headers
    data = png_bytes()
    session = client.post("/api/assets/uploads/", json={"filename": "logo.png", "contentType": "image/png",
                                                       "size": len(data)}, headers=h).json()
    client.put(session["upload"]["url"].split("8000", 1)[1], content=data, headers={"Content-Type": "image/png"})
    pending = client.post("/api/brand-kits/", json={"name": "Main", "logoAssetId": session["asset"]["id"]}, headers=h)
    assert pending.status_code == 400 and pending.json()["code"] == "asset_not_ready"
    asset = client.post(f"/api/assets/{session['asset']['id']}/finalize/", headers=h).json()
    kit = client.post("/api/brand-kits/", json={
        "name": "Main", "isDefault": True, "logoAssetId": asset["id"], "colors": {"primary": "#112233"},
        "sender": {"fromName": "Shop", "fromEmail": "News@Shop.Example"}}, headers=h)
    assert kit.status_code == 201, kit.text
    kit = kit.json()
    assert kit["logoUrl"] == asset["url"] and kit["sender"]["fromEmail"] == "news@shop.example"
    second = client.post("/api/brand-kits/", json={"name": "Alt", "isDefault": True}, headers=h).json()
    kits = {k["name"]: k for k in client.get("/api/brand-kits/", headers=h).json()["results"]}
    assert kits["Alt"]["isDefault"] and not kits["Main"]["isDefault"]  # one default per tenant
    bad = client.patch(f"/api/brand-kits/{second['id']}/", json={"colors": {"primary": "red"}}, headers=h)
    assert bad.status_code == 400 and "colors.primary" in bad.json()
    assert client.get(f"/api/brand-kits/{kit['id']}/", headers=tenants.b.headers).status_code == 404
    assert client.delete(f"/api/brand-kits/{kit['id']}/", headers=h).status_code == 204
    assert client.get("/api/brand-kits/", headers=h).json()["count"] == 1
