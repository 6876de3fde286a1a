"""Compute jobs, materialized members, entered/exited, hooks, scheduler, worker and leases."""
from __future__ import annotations

import time
from datetime import timedelta

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.time import db_time, naive_utc, parse_db_time, utc_now
from engine.membership import computations as compute
from tests.segments_fixtures import DAY, append_events, create_segment

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]

BIG_SPENDERS = {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
                "operator": "gte", "value": 500}
# By hand from segments_fixtures (all history up to now): alice 550, bob 600, carol 900, gina 500,
# hank 500; erin's 499.5 falls short and frank's order is still in the future.
BIG_SPENDERS_MEMBERS = ["alice", "bob", "carol", "gina", "hank"]


def read_parquet(runtime, key: str) -> pa.Table:
    return pq.read_table(runtime.lake.store.duckdb_path(key))


def start_job(client, headers, segment_id) -> int:
    response = client.post(f"/api/segments/{segment_id}/compute/", headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/api/segments/jobs/{body['job_id']}/"
    return body["job_id"]


def test_job_lifecycle_and_materialized_members(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    job_id = start_job(client, tenant_a.headers, segment["id"])
    queued = client.get(f"/api/segments/jobs/{job_id}/", headers=tenant_a.headers).json()
    assert (queued["status"], queued["segment_id"], queued["trigger"]) == ("queued", segment["id"], "api")
    assert queued["started_at"] is None and queued["member_count"] is None
    assert client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()["status"] == "queued"
    # asking again while queued returns the same job
    assert start_job(client, tenant_a.headers, segment["id"]) == job_id

    assert runtime.compute.run_pending() == [job_id]
    done = client.get(f"/api/segments/{segment['id']}/jobs/{job_id}/", headers=tenant_a.headers).json()
    assert done["status"] == "done", done
    assert (done["member_count"], done["entered_count"], done["exited_count"]) == (5, 5, 0)
    assert done["version"] == 1 and done["error"] is None
    assert done["queued_at"] <= done["started_at"] <= done["finished_at"]
    assert done["duration_seconds"] >= 0

    fetched = client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()
    assert (fetched["status"], fetched["member_count"]) == ("ready", 5)
    assert fetched["last_computed_at"] == done["as_of"]

    row = runtime.meta.query_one("SELECT * FROM segment_computations WHERE id = ?", (job_id,))
    assert row["members_key"] == (f"segments/tenant_id={tenant_a.tenant_id}/segment_id={segment['id']}/"
                                  f"computation={job_id}/members.parquet")
    assert runtime.meta.query_one("SELECT current_computation_id FROM segments WHERE id = ?",
                                  (segment["id"],))[0] == job_id
    members = read_parquet(runtime, row["members_key"])
    assert members.schema.field("user_id").type == pa.string()
    assert members.schema.field("computed_at").type == pa.timestamp("us")
    assert members.column("user_id").to_pylist() == BIG_SPENDERS_MEMBERS
    assert set(members.column("computed_at").to_pylist()) == {naive_utc(parse_db_time(row["as_of"]))}

    listing = client.get(f"/api/segments/{segment['id']}/jobs/", headers=tenant_a.headers).json()
    assert listing["count"] == 1 and listing["results"][0]["job_id"] == job_id


def test_entered_and_exited_after_new_events(client, tenant_a, tenant_b, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    seen: list[compute.ComputationResult] = []
    runtime.compute_listeners.append(lambda result: seen.append(result))
    runtime.compute_listeners.append(lambda result: 1 / 0)  # a broken consumer changes nothing
    try:
        first = start_job(client, tenant_a.headers, segment["id"])
        runtime.compute.run_pending()
        # erin spends 1 more (499.5 -> 500.5: enters), bob gets a 200 refund (600 -> 400: exits);
        # tenant B's events never count for A
        append_events(runtime, tenant_a.tenant_id, [
            ("erin", "order_placed", DAY, {"total": 1}),
            ("bob", "order_placed", DAY, {"total": -200}),
        ], as_of=live_world.as_of)
        append_events(runtime, tenant_b.tenant_id, [("dave", "order_placed", DAY, {"total": 10_000})],
                      as_of=live_world.as_of)
        second = start_job(client, tenant_a.headers, segment["id"])
        runtime.compute.run_pending()
    finally:
        del runtime.compute_listeners[-2:]

    job = client.get(f"/api/segments/jobs/{second}/", headers=tenant_a.headers).json()
    assert (job["status"], job["member_count"], job["entered_count"], job["exited_count"]) == ("done", 5, 1, 1)

    assert [r.computation_id for r in seen] == [first, second]
    assert seen[0].previous_computation_id is None
    assert seen[0].entered_user_ids == BIG_SPENDERS_MEMBERS and seen[0].exited_user_ids == []
    result = seen[1]
    assert (result.tenant_id, result.segment_id, result.previous_computation_id) == (
        tenant_a.tenant_id, segment["id"], first)
    assert (result.entered_user_ids, result.exited_user_ids) == (["erin"], ["bob"])
    assert read_parquet(runtime, result.members_key).column("user_id").to_pylist() == [
        "alice", "carol", "erin", "gina", "hank"]
    changes = runtime.computations.read_changes(tenant_a.tenant_id, second)
    assert list(zip(changes.column("change").to_pylist(), changes.column("user_id").to_pylist())) == [
        ("entered", "erin"), ("exited", "bob")]
    assert runtime.computations.read_changes(tenant_b.tenant_id, second) is None


def test_failed_job_reports_the_error_then_recovers(client, tenant_a, runtime, live_world):
    """Saved before any event has a `discount`: the computation fails naming the field, and
    succeeds once the data exists."""
    definition = {"type": "monetary", "event_type": "order_placed", "property": "discount", "metric": "sum",
                  "operator": "gt", "value": 0}
    segment = create_segment(client, tenant_a.headers, definition)
    failed = start_job(client, tenant_a.headers, segment["id"])
    runtime.compute.run_pending()
    job = client.get(f"/api/segments/jobs/{failed}/", headers=tenant_a.headers).json()
    assert job["status"] == "failed" and "definition.property" in job["error"], job
    assert client.get(f"/api/segments/{segment['id']}/", headers=tenant_a.headers).json()["status"] == "failed"

    append_events(runtime, tenant_a.tenant_id, [("carol", "order_placed", DAY, {"total": 10, "discount": 2})],
                  as_of=live_world.as_of)
    retry = start_job(client, tenant_a.headers, segment["id"])
    assert retry != failed
    runtime.compute.run_pending()
    job = client.get(f"/api/segments/jobs/{retry}/", headers=tenant_a.headers).json()
    assert (job["status"], job["member_count"]) == ("done", 1)


def test_compute_needs_a_definition(client, tenant_a):
    draft = create_segment(client, tenant_a.headers)
    response = client.post(f"/api/segments/{draft['id']}/compute/", headers=tenant_a.headers)
    assert response.status_code == 400 and response.json()["code"] == "segment_has_no_definition"


def test_scheduler_follows_interval_and_versions(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    create_segment(client, tenant_a.headers, name="draft")  # nothing to compute
    url = f"/api/segments/{segment['id']}/"
    first = runtime.compute.schedule_due()
    assert len(first) == 1
    assert runtime.compute.schedule_due() == []  # already queued
    runtime.compute.run_pending()
    assert client.get(f"/api/segments/jobs/{first[0]}/", headers=tenant_a.headers).json()["trigger"] == "schedule"

    now = utc_now()
    assert runtime.compute.schedule_due(now + timedelta(minutes=14)) == []
    assert len(runtime.compute.schedule_due(now + timedelta(minutes=16))) == 1  # default 15 minutes
    runtime.compute.run_pending()

    client.patch(url, json={"compute_interval_minutes": 60}, headers=tenant_a.headers)
    now = utc_now()
    assert runtime.compute.schedule_due(now + timedelta(minutes=16)) == []
    assert len(runtime.compute.schedule_due(now + timedelta(minutes=61))) == 1
    runtime.compute.run_pending()

    # a new definition version is due at once
    client.patch(url, json={"definition": {**BIG_SPENDERS, "value": 900}}, headers=tenant_a.headers)
    assert client.get(url, headers=tenant_a.headers).json()["status"] == "stale"
    (job_id,) = runtime.compute.schedule_due()
    runtime.compute.run_pending()
    job = client.get(f"/api/segments/jobs/{job_id}/", headers=tenant_a.headers).json()
    assert (job["version"], job["member_count"]) == (2, 1)  # carol
    assert client.get(url, headers=tenant_a.headers).json()["status"] == "ready"

    client.delete(url, headers=tenant_a.headers)
    assert runtime.compute.schedule_due(utc_now() + timedelta(days=1)) == []


def test_background_worker_runs_queued_jobs(client, tenant_a, runtime, live_world):
    runtime.start_worker(runtime.compute.worker)  # stopped by runtime.stop() at teardown
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    job_id = start_job(client, tenant_a.headers, segment["id"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.get(f"/api/segments/jobs/{job_id}/", headers=tenant_a.headers).json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert (job["status"], job["member_count"]) == ("done", 5), job


def test_compute_can_wait_for_the_job(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    url = f"/api/segments/{segment['id']}/compute/"
    started = time.monotonic()
    still = client.post(url, params={"wait": "0.3"}, headers=tenant_a.headers)  # no worker yet: the wait ends
    assert time.monotonic() - started >= 0.3
    assert still.status_code == 202 and still.json()["status"] == "queued", still.text
    runtime.start_worker(runtime.compute.worker)  # stopped by runtime.stop() at teardown
    done = client.post(url, params={"wait": "20"}, headers=tenant_a.headers)
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["status"], body["member_count"]) == ("done", 5)
    assert client.get(f"/api/segments/jobs/{body['job_id']}/", headers=tenant_a.headers).json() == body
    members = client.get(f"/api/segments/{segment['id']}/members/", headers=tenant_a.headers)
    assert members.status_code == 200 and [m["user_id"] for m in members.json()["results"]] == BIG_SPENDERS_MEMBERS
    for bad in ("61", "-1", "abc", "nan", "inf"):
        r = client.post(url, params={"wait": bad}, headers=tenant_a.headers)
        assert r.status_code == 400 and "wait" in r.json(), (bad, r.text)


def test_a_job_whose_worker_died_is_taken_over(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    job_id = start_job(client, tenant_a.headers, segment["id"])
    # a worker claimed it, then vanished: its lease is still valid, so nobody else may run it
    lease = utc_now() + timedelta(seconds=60)
    runtime.meta.execute("UPDATE jobs SET status = 'running', attempts = 1, started_at = ?,"
                         " lease_until = ? WHERE id = ?", (db_time(utc_now()), db_time(lease), job_id))
    assert runtime.compute.run_pending() == []
    # ...and while it runs, a second job of the same segment waits
    second = start_job(client, tenant_a.headers, segment["id"])
    assert second != job_id and runtime.compute.run_pending() == []
    runtime.meta.execute("UPDATE jobs SET lease_until = ? WHERE id = ?",
                         (db_time(utc_now() - timedelta(seconds=1)), job_id))
    assert runtime.compute.run_pending() == [job_id, second]
    row = runtime.meta.query_one("SELECT status, attempts FROM jobs WHERE id = ?", (job_id,))
    assert (row["status"], row["attempts"]) == ("done", 2)
    second_job = client.get(f"/api/segments/jobs/{second}/", headers=tenant_a.headers).json()
    assert (second_job["status"], second_job["entered_count"], second_job["exited_count"]) == ("done", 0, 0)


def test_retention_keeps_recent_computations(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    jobs = []
    for _ in range(compute.KEEP_COMPUTATIONS + 2):
        jobs.append(start_job(client, tenant_a.headers, segment["id"]))
        runtime.compute.run_pending()
    keys = {job: runtime.meta.query_one("SELECT members_key FROM segment_computations WHERE id = ?", (job,))[0]
            for job in jobs}
    store = runtime.lake.store
    assert all(store.exists(key) for key in keys.values())
    soon = utc_now() + compute.RETENTION_GRACE - timedelta(minutes=5)  # superseded too recently
    assert runtime.computations.apply_retention(tenant_a.tenant_id, segment["id"], now=soon) == 0
    removed = runtime.computations.apply_retention(tenant_a.tenant_id, segment["id"],
                                      now=utc_now() + compute.RETENTION_GRACE + timedelta(seconds=1))
    assert removed == 2
    assert [store.exists(keys[job]) for job in jobs] == [False, False, True, True, True]


def test_a_job_runs_on_the_backend_it_was_queued_for(client, tenant_a, runtime, live_world):
    segment = create_segment(client, tenant_a.headers, BIG_SPENDERS)
    job_id = runtime.compute.enqueue(tenant_a.tenant_id, segment["id"], "cli", backend="duckdb")
    payload = runtime.meta.query_one("SELECT payload FROM jobs WHERE id = ?", (job_id,))[0]
    assert orjson.loads(payload) == {"segment_id": segment["id"], "backend": "duckdb"}
    assert runtime.compute.run_pending() == [job_id]
    assert runtime.compute.get_job(tenant_a.tenant_id, job_id)["member_count"] == len(BIG_SPENDERS_MEMBERS)
    with pytest.raises(ValueError, match="unknown query backend 'presto'"):
        runtime.compute.enqueue(tenant_a.tenant_id, segment["id"], "cli", backend="presto")
    assert runtime.compute.run_pending() == []  # nothing was queued
