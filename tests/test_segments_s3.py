"""Preview and computations on an S3 lake (a real moto server): DuckDB reads s3:// paths through
httpfs, members and changes files are written to and read back from the bucket."""
from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from engine.runtime import Runtime
from engine.settings import Settings
from tests.segments_fixtures import DAY, SEED_DEFINITION, SEED_MEMBERS_A, append_events, create_segment

pytest_plugins = ["tests.api_fixtures", "tests.storage_fixtures", "tests.segments_fixtures"]


@pytest.fixture
def runtime(data_dir, s3_server):
    """The api_fixtures runtime with its lake in the S3 bucket."""
    rt = Runtime(Settings(data_dir=data_dir, run_workers=False, **s3_server.settings_overrides()))
    yield rt
    rt.stop()
    rt.meta.close()


def test_preview_and_compute_on_s3(client, runtime, tenant_a, live_world):
    assert runtime.lake.store.is_remote
    as_of = live_world.as_of.isoformat() + "Z"
    body = client.post("/api/segments/preview/", json={"definition": SEED_DEFINITION, "as_of": as_of},
                       headers=tenant_a.headers).json()
    assert body["sample_user_ids"] == sorted(SEED_MEMBERS_A)
    assert "s3://" not in body["sql"]

    definition = {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
                  "operator": "gte", "value": 500}  # alice, bob, carol, gina, hank (see test_segments_compute)
    segment = create_segment(client, tenant_a.headers, definition)
    first = client.post(f"/api/segments/{segment['id']}/compute/", headers=tenant_a.headers).json()["job_id"]
    runtime.compute.run_pending()
    append_events(runtime, tenant_a.tenant_id, [("bob", "order_placed", DAY, {"total": -200})],
                  as_of=live_world.as_of)
    second = client.post(f"/api/segments/{segment['id']}/compute/", headers=tenant_a.headers).json()["job_id"]
    runtime.compute.run_pending()

    jobs = [client.get(f"/api/segments/jobs/{job}/", headers=tenant_a.headers).json() for job in (first, second)]
    assert [(j["status"], j["member_count"], j["entered_count"], j["exited_count"]) for j in jobs] == [
        ("done", 5, 5, 0), ("done", 4, 0, 1)], jobs
    key = runtime.meta.query_one("SELECT members_key FROM segment_computations WHERE id = ?", (second,))[0]
    members = pq.read_table(io.BytesIO(runtime.lake.store.get_bytes(key)))
    assert members.column("user_id").to_pylist() == ["alice", "carol", "gina", "hank"]
    changes = runtime.computations.read_changes(tenant_a.tenant_id, second)
    assert list(zip(changes.column("change").to_pylist(), changes.column("user_id").to_pylist())) == [
        ("exited", "bob")]
