"""Exports over HTTP on the local lake: start, poll, download; every format read back."""
from __future__ import annotations

import csv
import io
import time
from datetime import timedelta

import orjson
import pyarrow.parquet as pq
import pytest

from common.time import db_time, utc_now
from engine.membership import computations as compute_module
from tests.membership_fixtures import add_events, add_profiles, compute, create_segment, frequency

pytest_plugins = ["tests.api_fixtures"]

BUYERS = [f"b{i:02d}" for i in range(9)]
PROFILES = {"b00": {"email": "zero@x.test", "plan": "pro", "age": 31},
            "b03": {"email": "three@x.test", "vip": True},
            "zz": {"email": "not-a-member@x.test"}}


@pytest.fixture
def segment(runtime, tenants):
    a = tenants.a.tenant_id
    add_events(runtime, a, [(u, "buy", {}) for u in BUYERS] + [("zz", "view", {})])
    add_profiles(runtime, a, PROFILES)
    segment_id = create_segment(runtime, a, frequency("buy"))
    compute(runtime, a, segment_id)
    return segment_id


def export(client, runtime, headers, segment_id, body) -> dict:
    r = client.post(f"/api/segments/{segment_id}/export/", json=body, headers=headers)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["status"] == "queued" and started["download_url"] is None
    assert runtime.exports.run_pending() == [started["export_id"]]
    r = client.get(f"/api/segments/{segment_id}/export/", params={"export_id": started["export_id"]}, headers=headers)
    assert r.status_code == 200
    return r.json()


def read_back(fmt: str, data: bytes) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_each_format_reads_back_as_the_members_with_traits(client, runtime, tenants, segment, fmt):
    h = tenants.a.headers
    done = export(client, runtime, h, segment, {"format": fmt, "traits": ["email", "vip"]})
    assert done["status"] == "done" and done["format"] == fmt and done["row_count"] == len(BUYERS)
    r = client.get(done["download_url"], headers=h)
    assert r.status_code == 200 and len(r.content) == done["bytes"]
    rows = read_back(fmt, r.content)
    assert [row["user_id"] for row in rows] == BUYERS
    by_user = {row["user_id"]: row for row in rows}
    empty = None if fmt != "csv" else ""
    assert by_user["b00"]["email"] == "zero@x.test" and by_user["b03"]["email"] == "three@x.test"
    assert by_user["b03"]["vip"] in (True, "true") and by_user["b00"]["vip"] == empty
    assert by_user["b05"]["email"] == empty
    assert set(rows[0]) == {"user_id", "computed_at", "email", "vip"}


def test_plain_export_has_members_and_computed_at(client, runtime, tenants, segment):
    done = export(client, runtime, tenants.a.headers, segment, {"format": "parquet"})
    table = pq.read_table(io.BytesIO(client.get(done["download_url"], headers=tenants.a.headers).content))
    assert table.column_names == ["user_id", "computed_at"]
    assert table.column("user_id").to_pylist() == BUYERS
    computed = runtime.meta.query_one("SELECT as_of FROM segment_computations WHERE id = ?", (done["computation_id"],))
    assert str(table.column("computed_at")[0].as_py()).replace(" ", "T") == computed["as_of"][:26]


def test_unknown_trait_and_bad_format(client, tenants, segment):
    h = tenants.a.headers
    r = client.post(f"/api/segments/{segment}/export/", json={"format": "csv", "traits": ["email", "nope"]}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "unknown_trait" and "traits[1]" in r.json()
    r = client.post(f"/api/segments/{segment}/export/", json={"format": "xlsx"}, headers=h)
    assert r.status_code == 400 and "format" in r.json()


def test_not_computed_and_not_ready(client, runtime, tenants, segment):
    a = tenants.a
    fresh = create_segment(runtime, a.tenant_id, frequency("buy"))
    r = client.post(f"/api/segments/{fresh}/export/", json={}, headers=a.headers)
    assert r.status_code == 409 and r.json()["code"] == "segment_not_computed"
    queued = client.post(f"/api/segments/{segment}/export/", json={}, headers=a.headers).json()
    r = client.get(f"/api/segments/exports/{queued['export_id']}/download/", headers=a.headers)
    assert r.status_code == 409 and r.json()["code"] == "export_not_ready"


def test_tenant_isolation_and_scope(client, runtime, tenants, segment):
    a, b = tenants.a, tenants.b
    done = export(client, runtime, a.headers, segment, {"format": "csv"})
    export_id = done["export_id"]
    assert client.post(f"/api/segments/{segment}/export/", json={}, headers=b.headers).status_code == 404
    assert client.get(f"/api/segments/{segment}/export/", params={"export_id": export_id},
                      headers=b.headers).status_code == 404
    assert client.get(f"/api/segments/exports/{export_id}/download/", headers=b.headers).status_code == 404
    # the right export id under another segment id is not found either
    other = create_segment(runtime, a.tenant_id, frequency("buy"))
    assert client.get(f"/api/segments/{other}/export/", params={"export_id": export_id},
                      headers=a.headers).status_code == 404
    narrow = a.key_headers("segments:read", "membership:read")
    for r in (client.post(f"/api/segments/{segment}/export/", json={}, headers=narrow),
              client.get(f"/api/segments/{segment}/export/", params={"export_id": export_id}, headers=narrow),
              client.get(f"/api/segments/exports/{export_id}/download/", headers=narrow)):
        assert r.status_code == 403 and r.json()["scope"] == ["exports:read"]


def test_export_pins_the_computation_it_was_requested_on(client, runtime, tenants, segment):
    a = tenants.a
    queued = client.post(f"/api/segments/{segment}/export/", json={"format": "jsonl"}, headers=a.headers).json()
    add_events(runtime, a.tenant_id, [("late", "buy", {})])
    compute(runtime, a.tenant_id, segment)
    runtime.exports.run_pending()
    done = client.get(f"/api/segments/{segment}/export/", params={"export_id": queued["export_id"]},
                      headers=a.headers).json()
    rows = read_back("jsonl", client.get(done["download_url"], headers=a.headers).content)
    assert [row["user_id"] for row in rows] == BUYERS


def test_worker_thread_runs_queued_exports(runtime, tenants, segment):

    runtime.start_worker(runtime.exports.worker)
    export_id = runtime.exports.create(tenants.a.tenant_id, segment, "csv")["export_id"]
    deadline = time.monotonic() + 20
    while runtime.exports.get(tenants.a.tenant_id, export_id)["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_export_can_wait_until_it_is_done(client, runtime, tenants, segment):

    a = tenants.a
    url = f"/api/segments/{segment}/export/"
    still = client.post(url, params={"wait": "0.2"}, json={"format": "csv"}, headers=a.headers)  # no worker yet
    assert still.status_code == 202 and still.json()["status"] == "queued", still.text
    runtime.start_worker(runtime.exports.worker)  # stopped by runtime.stop() at teardown
    done = client.post(url, params={"wait": "20"}, json={"format": "jsonl"}, headers=a.headers)
    assert done.status_code == 200 and done.json()["status"] == "done", done.text
    rows = read_back("jsonl", client.get(done.json()["download_url"], headers=a.headers).content)
    assert [row["user_id"] for row in rows] == BUYERS
    for bad in ("61", "-1", "soon"):
        r = client.post(url, params={"wait": bad}, json={"format": "csv"}, headers=a.headers)
        assert r.status_code == 400 and "wait" in r.json(), (bad, r.text)


def test_export_of_a_removed_snapshot_fails_cleanly(client, runtime, tenants, segment):
    a = tenants.a
    queued = client.post(f"/api/segments/{segment}/export/", json={}, headers=a.headers).json()
    for _ in range(compute_module.KEEP_COMPUTATIONS):
        compute(runtime, a.tenant_id, segment)
    later = utc_now() + compute_module.RETENTION_GRACE + timedelta(minutes=1)
    assert runtime.computations.apply_retention(a.tenant_id, segment, now=later) == 1  # the pinned one
    runtime.exports.run_pending()
    failed = client.get(f"/api/segments/{segment}/export/", params={"export_id": queued["export_id"]},
                        headers=a.headers).json()
    assert failed["status"] == "failed" and "no longer kept" in failed["error"] and failed["download_url"] is None
    r = client.get(f"/api/segments/exports/{queued['export_id']}/download/", headers=a.headers)
    assert r.status_code == 409 and r.json()["code"] == "export_not_ready"
    assert not list(runtime.lake.store.scratch_dir().iterdir())


def test_an_export_whose_worker_died_is_run_again_once_its_lease_lapses(runtime, tenants, segment):
    a = tenants.a.tenant_id
    export_id = runtime.exports.create(a, segment, "csv")["export_id"]
    job_id = runtime.meta.query_one("SELECT job_id FROM segment_exports WHERE id = ?", (export_id,))[0]
    [lease] = runtime.jobs.claim("export")  # a worker took it, then vanished
    assert runtime.exports.run_pending() == [] and runtime.exports.run(export_id)["status"] == "queued"
    runtime.meta.execute("UPDATE jobs SET lease_until = ? WHERE id = ?",
                         (db_time(utc_now() - timedelta(seconds=1)), job_id))
    assert runtime.exports.run_pending() == [export_id]
    done = runtime.exports.get(a, export_id)
    assert (done["status"], done["row_count"]) == ("done", len(BUYERS))
    assert not runtime.jobs.complete(lease)  # the dead worker's late answer changes nothing
    assert runtime.exports.get(a, export_id) == done
