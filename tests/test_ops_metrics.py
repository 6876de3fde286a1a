"""GET /metrics through the real app: who may read it, and that its series move with real ingest,
compute, membership, send and rate-limited requests (parsed with prometheus_client's own parser)."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings
from tests.sends_fixtures import make_template, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

LOOPBACK = ("127.0.0.1", 40000)
PRO = {"logic": "AND", "conditions": [{"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}]}


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def local(app):
    """A client that connects from the loopback address (the default allowed scraper)."""
    with TestClient(app, client=LOOPBACK) as client:
        yield client


def _app_client(data_dir, client_address=LOOPBACK, **settings):
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False, **settings))
    return runtime, TestClient(create_app(runtime.settings, runtime=runtime), client=client_address)


# -- access ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("address, allowed", [
    (("127.0.0.1", 1), True), (("127.8.9.10", 1), True), (("::1", 1), True), (("::ffff:127.0.0.1", 1), True),
    (("10.0.0.5", 1), False), (("2001:db8::1", 1), False), (("testclient", 50000), False)])
def test_without_a_token_only_loopback_clients_may_scrape(app, address, allowed):
    with TestClient(app, client=address) as client:
        r = client.get("/metrics")
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert (r.status_code, r.json()["code"]) == (403, "metrics_forbidden")


def test_with_a_token_every_client_needs_it(data_dir):
    runtime, client = _app_client(data_dir, client_address=("10.0.0.5", 1), metrics_token="scrape-secret-0123456789")
    try:
        with client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "ApiKey scrape-secret-0123456789"}):
                r = client.get("/metrics", headers=headers)
                assert (r.status_code, r.json()["code"]) == (401, "metrics_token_required")
                assert "scrape-secret" not in r.text
            assert scrape(client, Authorization="Bearer scrape-secret-0123456789")
        with TestClient(client.app, client=LOOPBACK) as loopback:  # loopback is not enough once a token is set
            assert loopback.get("/metrics").status_code == 401
    finally:
        runtime.stop()


def test_allowed_client_networks_are_a_setting(data_dir):
    runtime, client = _app_client(data_dir, client_address=("10.1.2.3", 1), metrics_clients="10.0.0.0/8")
    try:
        with client:
            assert client.get("/metrics").status_code == 200
        with TestClient(client.app, client=LOOPBACK) as loopback:
            assert loopback.get("/metrics").status_code == 403
    finally:
        runtime.stop()


# -- series -----------------------------------------------------------------------------------------
def test_ingest_counts_accepted_duplicates_and_rejected_and_the_wal_gauges(local, runtime, tenant_a):
    h = tenant_a.headers
    batch = {"batch": [{"user_id": "u1", "event_type": "page_viewed", "event_id": f"e{i}"} for i in range(3)]}
    assert local.post("/api/events/", json=batch, headers=h).json()["accepted"] == 3
    again = {"batch": [*batch["batch"][:2], {"user_id": "u1", "event_type": "page_viewed", "event_id": "e9"}]}
    assert local.post("/api/events/", json=again, headers=h).json() == {"accepted": 1, "duplicates": 2,
                                                                        "journeys_matched": 0}
    bad = local.post("/api/events/", json={"batch": [{"user_id": "u1"}]}, headers=h)
    assert bad.status_code == 400
    assert local.post("/api/events/identify/", json={"user_id": "u1", "traits": {"plan": "pro"}},
                      headers=h).status_code == 202
    time.sleep(0.05)  # so the oldest unflushed record is measurably old

    samples = scrape(local)
    assert value(samples, "segops_ingest_events_total", kind="track", outcome="accepted") == 4
    assert value(samples, "segops_ingest_events_total", kind="track", outcome="duplicate") == 2
    assert value(samples, "segops_ingest_events_total", kind="identify", outcome="accepted") == 1
    assert value(samples, "segops_ingest_rejected_requests_total", kind="track", code=bad.json()["code"]) == 1
    assert value(samples, "segops_wal_pending_bytes") > 0
    assert value(samples, "segops_wal_flush_lag_seconds") >= 0.05
    assert value(samples, "segops_requests_total", method="POST", route="/api/events/", status="202") == 2
    assert value(samples, "segops_request_duration_seconds_count", method="POST", route="/api/events/",
                 status="400") == 1

    runtime.ingest.flush_now()
    samples = scrape(local)
    assert value(samples, "segops_wal_pending_bytes") == 0
    assert value(samples, "segops_wal_flush_lag_seconds") == 0


def test_compute_membership_and_send_queue_series(local, runtime, tenant_a):
    h = tenant_a.headers
    users = {f"p{i}": {"email": f"p{i}@example.com", "plan": "pro"} for i in range(5)}
    users["f1"] = {"email": "f1@example.com", "plan": "free"}
    profiles(runtime, tenant_a.tenant_id, users)
    segment = local.post("/api/segments/", json={"name": "Pro", "segment_type": "rule", "definition": PRO},
                         headers=h).json()
    assert local.post(f"/api/segments/{segment['id']}/compute/", headers=h).status_code == 202
    assert value(scrape(local), "segops_compute_queue_depth", status="queued") == 1
    runtime.compute.run_pending()  # what the compute worker runs
    broken = local.post("/api/segments/", json={"name": "Broken", "segment_type": "rule", "definition": {
        "logic": "AND", "conditions": [{"type": "trait", "trait": "never_set", "operator": "eq", "value": 1}]}},
        headers=h).json()
    job = local.post(f"/api/segments/{broken['id']}/compute/", headers=h).json()
    runtime.compute.run_pending()
    failed = local.get(f"/api/segments/jobs/{job['job_id']}/", headers=h).json()
    assert failed["status"] == "failed", failed

    lookup = local.get("/api/segments/membership/?user_id=p1", headers=h)  # the fast path
    assert lookup.json()["segment_ids"] == [segment["id"]]
    template = make_template(local, h)
    prepared = local.post("/api/broadcasts/prepare/", json={"templateId": template["id"],
                                                           "audience": {"segmentId": segment["id"]}}, headers=h).json()
    assert local.post("/api/broadcasts/send-prepared/", json={"preparedSendId": prepared["id"]},
                      headers=h).status_code == 202

    samples = scrape(local)
    assert value(samples, "segops_compute_job_duration_seconds_count", outcome="done") == 1
    assert value(samples, "segops_compute_job_duration_seconds_sum", outcome="done") > 0
    assert value(samples, "segops_compute_job_duration_seconds_count", outcome="failed") == 1
    assert value(samples, "segops_compute_job_failures_total") == 1
    assert value(samples, "segops_compute_queue_depth", status="queued") == 0
    assert value(samples, "segops_requests_total", method="GET", route="/api/segments/membership/",
                 status="200") == 1
    assert value(samples, "segops_membership_index_segments") >= 1
    assert value(samples, "segops_membership_index_users") == 5
    assert 0 <= value(samples, "segops_membership_index_age_seconds") < 600
    assert value(samples, "segops_send_queue_depth", status="queued") == 5  # the 5 pro users, none handed off
    assert "p1" not in "".join(name + str(labels) for name, labels in samples)  # no user input in labels


def test_requests_are_labelled_by_route_template_and_rate_limits_are_counted(local, runtime, tenant_a):
    h = tenant_a.headers
    secret = "user-42-with-a-secret-looking-id"
    local.get(f"/api/profiles/{secret}/", headers=h)
    local.get("/api/segments/999/", headers=h)
    local.get(f"/no/such/{secret}")
    runtime.accounts.set_plan(tenant_a.tenant_id, "free", rate_limit_per_minute=2)
    statuses = [local.get("/api/segments/", headers=h).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]

    text = local.get("/metrics").text
    assert secret not in text and tenant_a.api_key not in text
    samples = scrape(local)
    assert value(samples, "segops_requests_total", method="GET", route="/api/profiles/{user_id}/", status="404") == 1
    assert value(samples, "segops_requests_total", method="GET", route="/api/segments/{segment_id:int}/",
                 status="404") == 1
    assert value(samples, "segops_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert value(samples, "segops_requests_total", method="GET", route="/api/segments/", status="429") == 1
    assert value(samples, "segops_rate_limited_total", route="/api/segments/") == 1


def test_each_runtime_has_its_own_registry(data_dir, tenant_a, tmp_path):
    first, first_client = _app_client(data_dir)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second, second_client = _app_client(second_dir)
    try:
        with first_client, second_client:
            assert first_client.post("/api/events/", json={"user_id": "u", "event_type": "x"},
                                     headers=tenant_a.headers).status_code == 202
            assert value(scrape(first_client), "segops_ingest_events_total", kind="track", outcome="accepted") == 1
            assert value(scrape(second_client), "segops_ingest_events_total", kind="track", outcome="accepted") == 0
    finally:
        first.stop()
        second.stop()
