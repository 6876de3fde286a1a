"""The serving half on an S3 lake (a real moto server): index, members list, export download
by presigned redirect."""
from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq
import pytest

from engine.runtime import Runtime
from engine.settings import Settings
from tests.membership_fixtures import add_events, add_profiles, compute, create_segment, frequency

pytest_plugins = ["tests.api_fixtures", "tests.storage_fixtures"]

BUYERS = [f"s{i:02d}" for i in range(7)]


@pytest.fixture
def runtime(data_dir, s3_server):
    """The api_fixtures runtime, with its lake in the S3 bucket."""
    rt = Runtime(Settings(data_dir=data_dir, run_workers=False, **s3_server.settings_overrides()))
    yield rt
    rt.stop()
    rt.meta.close()


def test_s3_lake_serves_membership_members_and_presigned_exports(client, runtime, tenants):
    a = tenants.a
    assert runtime.lake.store.is_remote
    add_events(runtime, a.tenant_id, [(u, "buy", {}) for u in BUYERS] + [("other", "view", {})])
    add_profiles(runtime, a.tenant_id, {"s01": {"email": "one@s3.test"}})
    segment = create_segment(runtime, a.tenant_id, frequency("buy"))
    compute(runtime, a.tenant_id, segment)

    r = client.get("/api/segments/membership/", params={"user_id": "s03"}, headers=a.headers)
    assert r.json() == {"user_id": "s03", "segment_ids": [segment], "cached": True}
    members = client.get(f"/api/segments/{segment}/members/", params={"limit": 100}, headers=a.headers).json()
    assert [m["user_id"] for m in members["results"]] == BUYERS

    started = client.post(f"/api/segments/{segment}/export/", json={"format": "parquet", "traits": ["email"]},
                          headers=a.headers).json()
    runtime.exports.run_pending()
    done = client.get(f"/api/segments/{segment}/export/", params={"export_id": started["export_id"]},
                      headers=a.headers).json()
    assert done["status"] == "done", done["error"]
    r = client.get(done["download_url"], headers=a.headers, follow_redirects=False)
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith(runtime.settings.s3_endpoint_url) and "Signature" in location
    downloaded = httpx.get(location)  # what `curl -L` does next, without our credentials
    assert downloaded.status_code == 200 and len(downloaded.content) == done["bytes"]
    table = pq.read_table(io.BytesIO(downloaded.content))
    assert table.column("user_id").to_pylist() == BUYERS
    assert dict(zip(table.column("user_id").to_pylist(), table.column("email").to_pylist()))["s01"] == "one@s3.test"
