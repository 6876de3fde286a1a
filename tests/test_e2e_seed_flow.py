"""The seed's whole curl sequence (segops-segments-api, segops-api-overview) through the real ASGI
app with its background workers running, every answer checked against the independent
reference evaluator (tests/reference_eval.py) on the same raw events and profiles.

Data: demo shop cohorts (cli.demo) posted through ``POST /api/events/`` and
``/api/events/identify/``, then flushed into the lake. The demo's spenders are also its most
frequent visitors, so one cohort alone yields almost no "high-value churner"; tenant A
therefore gets two cohorts: ``user-*`` whose data ends a day inside the 30-day window (recent
visitors drop out) and ``lapsed-*`` whose data ends 45 days ago (spenders qualify). Tenant B
gets a lapsed cohort under the *same* ``user-*`` ids: a leak across tenants would add B's
spenders to A's answers.
"""
from __future__ import annotations

import io
import time
from datetime import datetime, timedelta

import orjson
import pyarrow.parquet as pq
import pytest

from common.time import naive_utc_now as utc_now
from cli import demo
from engine.runtime import Runtime
from engine.settings import Settings
from tests.api_fixtures import PASSWORD
from tests.reference_eval import ReferenceEvaluator
from tests.segments_fixtures import SEED_DEFINITION

pytest_plugins = ["tests.api_fixtures"]

SEED_CREATE = {"name": "High-Value Churners", "segment_type": "rule",
               "description": "Users who spent ≥$500 but haven't returned in 30 days"}
POST_CHUNK = 5000
WAIT_SECONDS = 60


@pytest.fixture
def runtime(data_dir):
    """Overrides api_fixtures.runtime: the seed flow runs on the real workers (flusher, compute
    scheduler/worker, export worker), started by the app's lifespan."""
    rt = Runtime(Settings(data_dir=data_dir, run_workers=True))
    yield rt
    rt.stop()
    rt.meta.close()


def cohort(tenant_id: int, users: int, events: int, seed: int, *, ends_at: datetime, prefix: str):
    """Demo data whose span ends at ``ends_at``, user ids renamed ``user-N`` -> ``<prefix>N``.
    Returns (events, profiles) as the reference evaluator's raw dicts, plus ``occurred_at``
    of each profile's identify."""

    def rename(user_id: str) -> str:
        return prefix + user_id.removeprefix("user-")

    out_events = [{"tenant_id": tenant_id, "event_id": f"{prefix}{row['event_id']}", "user_id": rename(row["user_id"]),
                   "event_type": row["event_type"], "occurred_at": row["occurred_at"],
                   "properties": orjson.loads(row["properties"])}
                  for table in demo.event_batches(users, events, seed, end=ends_at) for row in table.to_pylist()]
    out_profiles = [{"tenant_id": tenant_id, "user_id": rename(row["user_id"]), "traits": orjson.loads(row["traits"]),
                     "occurred_at": row["updated_at"]}
                    for row in demo.profile_table(users, seed, ends_at).to_pylist()]
    return out_events, out_profiles


def iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds") + "Z"


def post_all(client, headers, path: str, items: list[dict]) -> int:
    accepted = 0
    for start in range(0, len(items), POST_CHUNK):
        r = client.post(path, content=orjson.dumps({"batch": items[start:start + POST_CHUNK]}),
                        headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        accepted += r.json()["accepted"]
    return accepted


def ingest(client, runtime, headers, events: list[dict], profiles: list[dict]) -> None:
    track = [{"event_id": e["event_id"], "user_id": e["user_id"], "event_type": e["event_type"],
              "occurred_at": iso(e["occurred_at"]), "properties": e["properties"]} for e in events]
    identify = [{"user_id": p["user_id"], "traits": p["traits"], "occurred_at": iso(p["occurred_at"])}
                for p in profiles]
    assert post_all(client, headers, "/api/events/", track) == len(track)
    assert post_all(client, headers, "/api/events/identify/", identify) == len(identify)


def wait_for(fetch, done, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} not done in {WAIT_SECONDS} s: {value}"
        time.sleep(0.05)


def parse_api_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1])


def test_seed_flow_matches_the_reference(client, runtime, tenants):
    a, b = tenants.a, tenants.b
    today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    active_events, active_profiles = cohort(a.tenant_id, 40, 6000, 5, ends_at=today - timedelta(days=29),
                                            prefix="user-")
    lapsed_events, lapsed_profiles = cohort(a.tenant_id, 40, 8000, 3, ends_at=today - timedelta(days=45),
                                            prefix="lapsed-")
    b_events, b_profiles = cohort(b.tenant_id, 30, 5000, 9, ends_at=today - timedelta(days=45), prefix="user-")
    events_a, profiles_a = active_events + lapsed_events, active_profiles + lapsed_profiles

    # -- ingest (ApiKey: server-to-server), then flush the WAL into the lake ------------------
    ingest(client, runtime, a.headers, events_a, profiles_a)
    ingest(client, runtime, b.headers, b_events, b_profiles)
    runtime.ingest.flush_now()

    def reference(as_of: datetime, tenant_id: int = a.tenant_id) -> set[str]:
        events, profiles = (events_a, profiles_a) if tenant_id == a.tenant_id else (b_events, b_profiles)
        return ReferenceEvaluator(events, profiles, tenant_id=tenant_id, as_of=as_of).members(SEED_DEFINITION)

    # -- JWT from the token endpoint ---------------------------------------------------------
    r = client.post("/api/auth/token/", json={"email": a.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    jwt = {"Authorization": f"Bearer {r.json()['access']}"}

    # -- create (the seed's body, with its "tenant" field naming the caller's tenant) --------
    r = client.post("/api/segments/", json={**SEED_CREATE, "tenant": a.tenant_id}, headers=jwt)
    assert r.status_code == 201, r.text
    created = r.json()
    segment_id = created["id"]
    assert {k: created[k] for k in SEED_CREATE} == SEED_CREATE
    assert created["definition"] is None and created["tenant"] == a.tenant_id

    # -- PATCH the seed's definition ---------------------------------------------------------
    r = client.patch(f"/api/segments/{segment_id}/", json={"definition": SEED_DEFINITION}, headers=jwt)
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["version"] == 1 and patched["definition"] is not None

    # -- preview (no as_of, like the seed: "now" lies between before and after) -------------
    before = utc_now()
    r = client.post("/api/segments/preview/", json={"definition": SEED_DEFINITION, "limit": 10}, headers=jwt)
    after = utc_now()
    assert r.status_code == 200, r.text
    preview = r.json()
    candidates = [reference(before), reference(after)]
    expected_preview = next((m for m in candidates if len(m) == preview["matched_users"]), candidates[0])
    # The dataset is built so that the answer is neither empty nor everyone.
    assert 4 <= len(expected_preview) < len({e["user_id"] for e in events_a}) // 2, expected_preview
    assert preview["matched_users"] == len(expected_preview)
    assert preview["sample_user_ids"] == sorted(expected_preview)[:10]
    assert "SELECT" in preview["sql"].upper()

    # -- compute: 202 queued + a job that finishes -------------------------------------------
    r = client.post(f"/api/segments/{segment_id}/compute/", headers=jwt)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    job_id = r.json()["job_id"]
    job = wait_for(lambda: client.get(f"/api/segments/jobs/{job_id}/", headers=jwt).json(),
                   lambda j: j["status"] in ("done", "failed"), "compute job")
    assert job["status"] == "done", job

    # -- export parquet, poll, download (follow the redirect if any), read ------------------
    r = client.post(f"/api/segments/{segment_id}/export/", json={"format": "parquet"}, headers=jwt)
    assert r.status_code == 202, r.text
    export_id = r.json()["export_id"]
    export = wait_for(lambda: client.get(f"/api/segments/{segment_id}/export/", params={"export_id": export_id},
                                         headers=jwt).json(),
                      lambda e: e["status"] in ("done", "failed"), "export")
    assert export["status"] == "done", export
    r = client.get(f"/api/segments/exports/{export_id}/download/", headers=jwt, follow_redirects=True)
    assert r.status_code == 200, r.text
    exported = pq.read_table(io.BytesIO(r.content)).to_pylist()
    computed_at = {row["computed_at"] for row in exported}
    assert len(computed_at) == 1  # one snapshot, one instant
    (as_of,) = computed_at
    assert before <= as_of <= utc_now()
    expected = reference(as_of)  # the computation's exact instant: no tolerance needed
    assert [row["user_id"] for row in exported] == sorted(expected)
    assert export["row_count"] == len(expected)

    # -- per-user membership (ApiKey) --------------------------------------------------------
    member = sorted(expected)[0]
    non_members = sorted((set(e["user_id"] for e in events_a) - expected))
    assert non_members
    for user_id, is_member in [(member, True), (non_members[0], False), (non_members[-1], False)]:
        r = client.get("/api/segments/membership/", params={"user_id": user_id}, headers=a.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == user_id and body["cached"] is True
        assert (segment_id in body["segment_ids"]) is is_member, (user_id, body)
    # A user that only tenant B's data would qualify is no member in A.
    b_only = sorted(reference(as_of, b.tenant_id) - expected)
    assert b_only
    body = client.get("/api/segments/membership/", params={"user_id": b_only[0]}, headers=a.headers).json()
    assert segment_id not in body["segment_ids"]

    # -- members: walk every cursor page -----------------------------------------------------
    walked, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/api/segments/{segment_id}/members/", params=params, headers=jwt)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["count"] == len(expected)
        assert len(page["results"]) <= 2
        walked.extend(page["results"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages <= len(expected)
    assert [m["user_id"] for m in walked] == sorted(expected)
    assert {parse_api_time(m["computed_at"]) for m in walked} == {as_of.replace(microsecond=0)}

    # -- the segment now reports its computation ---------------------------------------------
    segment = client.get(f"/api/segments/{segment_id}/", headers=jwt).json()
    assert segment["member_count"] == len(expected) and segment["status"] == "ready"

    # -- versions: newest first, the PATCH is version 1, written by this user ----------------
    r = client.get(f"/api/segments/{segment_id}/versions/", headers=jwt)
    assert r.status_code == 200, r.text
    versions = r.json()
    assert versions["count"] == 1 and [v["version"] for v in versions["results"]] == [1]
    stored = versions["results"][0]
    assert stored["author"]["user_id"] == a.user_id
    # The stored (canonical) definition means the same as the seed's.
    assert (ReferenceEvaluator(events_a, profiles_a, tenant_id=a.tenant_id, as_of=as_of)
            .members(stored["definition"]) == expected)
