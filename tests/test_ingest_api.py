"""POST /api/events/ and /api/events/identify/ through the real app: acceptance, dedup, validation."""
from __future__ import annotations

import re
from datetime import datetime

import orjson
import pytest

from engine.ingest.parse import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_EVENT_BYTES
from tests.ingest_fixtures import event_ids, lake_rows, post

pytest_plugins = ["tests.api_fixtures"]

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _event(i: int, **fields) -> dict:
    return {"event_id": f"e-{i}", "user_id": f"u-{i % 7}", "event_type": "page_viewed", **fields}


def test_single_event_and_batch_reach_the_lake_with_normalized_fields(client, runtime, tenant_a):
    single = {"event_id": "order-1", "user_id": "alice", "event_type": "order_placed",
              "occurred_at": "2026-04-25T16:32:00.25+02:00",
              "properties": {"total": 42.5, "currency": "EUR", "items": 2, "tags": ["a", "b"]}}
    r = post(client, tenant_a.headers, single)
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "duplicates": 0, "journeys_matched": 0}

    before = datetime.utcnow()
    r = post(client, tenant_a.headers, {"batch": [{"user_id": "bob", "event_type": "signup"},
                                                  {"user_id": "bob", "event_type": "page_viewed",
                                                   "occurred_at": "2026-04-25T14:32:00Z"}]})
    assert r.json() == {"accepted": 2, "duplicates": 0, "journeys_matched": 0}
    assert event_ids(runtime, tenant_a.tenant_id) == []  # durable in the WAL, not yet in the lake

    assert runtime.ingest.flush_now() == 3
    rows = {row["event_type"]: row for row in lake_rows(runtime, tenant_a.tenant_id)}
    order = rows["order_placed"]
    assert order["event_id"] == "order-1" and order["user_id"] == "alice"
    assert order["tenant_id"] == tenant_a.tenant_id
    assert order["occurred_at"] == datetime(2026, 4, 25, 14, 32, 0, 250000)  # +02:00 -> UTC, naive
    assert orjson.loads(order["properties"]) == single["properties"]
    signup = rows["signup"]
    assert UUID7.match(signup["event_id"])  # generated when the client sends none
    assert signup["properties"] == "{}"
    assert before <= signup["occurred_at"] == signup["received_at"] <= datetime.utcnow()
    assert rows["page_viewed"]["occurred_at"] == datetime(2026, 4, 25, 14, 32)


def test_retries_count_as_duplicates_and_are_stored_once(client, runtime, tenant_a):
    batch = {"batch": [_event(i) for i in range(20)]}
    assert post(client, tenant_a.headers, batch).json()["accepted"] == 20
    retry = post(client, tenant_a.headers, batch)
    assert retry.status_code == 202
    assert retry.json() == {"accepted": 0, "duplicates": 20, "journeys_matched": 0}

    runtime.ingest.flush_now()
    mixed = {"batch": [_event(5), _event(100), _event(100), _event(101)]}  # old, new, repeat, new
    assert post(client, tenant_a.headers, mixed).json() == {"accepted": 2, "duplicates": 2, "journeys_matched": 0}
    runtime.ingest.flush_now()
    ids = event_ids(runtime, tenant_a.tenant_id)
    assert sorted(ids) == sorted({f"e-{i}" for i in [*range(20), 100, 101]})


def test_same_event_id_in_two_tenants_is_two_events(client, runtime, tenant_a, tenant_b):
    for tenant in (tenant_a, tenant_b):
        assert post(client, tenant.headers, _event(1)).json()["accepted"] == 1
        assert post(client, tenant.headers, _event(1)).json()["duplicates"] == 1
    runtime.ingest.flush_now()
    assert event_ids(runtime, tenant_a.tenant_id) == ["e-1"]
    assert event_ids(runtime, tenant_b.tenant_id) == ["e-1"]


def _batch_with(index: int, bad: dict, size: int = 20) -> dict:
    items = [_event(i) for i in range(size)]
    items[index] = bad
    return {"batch": items}


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b'{"batch": [{"user_id": "u"', 400, "malformed_json", "body"),
    (b"[1, 2]", 400, "invalid_type", "body"),
    (_batch_with(3, {"event_type": "x"}), 400, "missing_field", "batch[3].user_id"),
    (_batch_with(4, {"user_id": "u"}), 400, "missing_field", "batch[4].event_type"),
    (_batch_with(2, {"user_id": 123, "event_type": "x"}), 400, "invalid_type", "batch[2].user_id"),
    (_batch_with(2, {"user_id": "", "event_type": "x"}), 400, "invalid_value", "batch[2].user_id"),
    (_batch_with(6, {"user_id": "u", "event_type": "x", "event_id": 7}), 400, "invalid_type", "batch[6].event_id"),
    (_batch_with(1, {"user_id": "u", "event_type": "x", "event": "dup"}), 400, "unknown_field", "batch[1].event"),
    (_batch_with(17, _event(17, occurred_at="last tuesday")), 400, "invalid_timestamp", "batch[17].occurred_at"),
    (_batch_with(9, _event(9, occurred_at="2026-04-25T14:32:00")), 400, "invalid_timestamp",
     "batch[9].occurred_at"),
    (_batch_with(9, _event(9, occurred_at=1745591520)), 400, "invalid_type", "batch[9].occurred_at"),
    (_batch_with(8, _event(8, properties=["a"])), 400, "invalid_type", "batch[8].properties"),
    (_batch_with(5, _event(5, properties={"blob": "x" * MAX_EVENT_BYTES})), 413, "event_too_large", "batch[5]"),
    (_batch_with(0, "not an object"), 400, "invalid_type", "batch[0]"),
    ({"batch": []}, 400, "empty_batch", "batch"),
    ({"batch": {"user_id": "u"}}, 400, "invalid_type", "batch"),
    ({"batch": [_event(1)], "sent_at": "now"}, 400, "unknown_field", "sent_at"),
    ({"user_id": "u", "event_type": "x", "properties": {"blob": "y" * MAX_EVENT_BYTES}}, 413, "event_too_large",
     "body"),
])
def test_invalid_bodies_are_rejected_naming_the_field(client, runtime, tenant_a, body, status, code, field):
    r = post(client, tenant_a.headers, body)
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["code"] == code
    assert field in payload and payload[field]
    assert field in payload["detail"]
    runtime.ingest.flush_now()
    assert event_ids(runtime, tenant_a.tenant_id) == []  # all-or-nothing: the valid items were not taken


def test_batch_limits_answer_413(client, tenant_a):
    too_many = {"batch": [_event(i) for i in range(MAX_BATCH_ITEMS + 1)]}
    r = post(client, tenant_a.headers, too_many)
    assert (r.status_code, r.json()["code"]) == (413, "batch_too_many_events")
    assert "batch" in r.json()

    big = {"batch": [_event(i, properties={"pad": "z" * 30_000}) for i in range(MAX_BATCH_BYTES // 30_000 + 2)]}
    r = post(client, tenant_a.headers, big)
    assert (r.status_code, r.json()["code"]) == (413, "batch_too_large")


def test_every_bad_item_is_named_in_one_answer(client, tenant_a):
    items = [_event(i) for i in range(30)]
    items[3] = {"event_type": "x"}
    items[11] = _event(11, occurred_at="soon")
    items[27] = _event(27, colour="red")
    r = post(client, tenant_a.headers, {"batch": items})
    assert r.status_code == 400
    payload = r.json()
    for field in ("batch[3].user_id", "batch[11].occurred_at", "batch[27].colour"):
        assert field in payload
    assert "3 errors in 3 of 30 items" in payload["detail"]


def test_credentials_and_scope_are_required(client, tenant_a):
    assert post(client, {}, _event(1)).status_code == 401
    narrow = tenant_a.key_headers("segments:read")
    r = post(client, narrow, _event(1))
    assert r.status_code == 403 and r.json()["code"] == "missing_scope"


def test_identify_merges_traits_latest_wins(client, runtime, tenant_a):
    r = post(client, tenant_a.headers, {"batch": [
        {"user_id": "alice", "traits": {"plan": "pro", "country": "DE"}, "occurred_at": "2026-05-02T00:00:00Z"},
        {"user_id": "bob", "traits": {"plan": "free"}},
    ]}, path="/api/events/identify/")
    assert (r.status_code, r.json()) == (202, {"accepted": 2})
    stale = {"user_id": "alice", "traits": {"plan": "free", "email": "a@x.test"}, "occurred_at": "2026-05-01T00:00:00Z"}
    assert post(client, tenant_a.headers, stale, path="/api/events/identify/").status_code == 202
    bad = post(client, tenant_a.headers, {"user_id": "carol", "traits": "vip"}, path="/api/events/identify/")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_type") and "traits" in bad.json()

    runtime.ingest.flush_now()
    snapshot = runtime.lake.profiles_snapshot(tenant_a.tenant_id)
    assert snapshot.rows == 2
    con = __import__("duckdb").connect()
    rows = dict(con.execute("SELECT user_id, traits FROM read_parquet(?)", [snapshot.file]).fetchall())
    alice = orjson.loads(rows["alice"])
    assert alice["plan"] == "pro"  # the older identify does not override the newer value
    assert alice["country"] == "DE" and alice["email"] == "a@x.test"  # but its new trait is merged
    assert orjson.loads(rows["bob"]) == {"plan": "free"}


@pytest.fixture
def journey_hooks(runtime):
    seen: list[tuple[int, list[str]]] = []

    def by_type(tenant_id, events):
        seen.append((tenant_id, events.column("event_id").to_pylist()))
        return sum(1 for t in events.column("event_type").to_pylist() if t == "order_placed")

    def broken(tenant_id, events):
        raise RuntimeError("a journey engine bug must not lose the request")

    for listener in (by_type, broken, lambda *_: 2):
        runtime.event_feed.subscribe_accepted(listener)
    return seen


def test_after_accept_hooks_sum_into_journeys_matched(client, tenant_a, journey_hooks):
    batch = {"batch": [_event(1, event_type="order_placed"), _event(2, event_type="order_placed"), _event(3)]}
    assert post(client, tenant_a.headers, batch).json() == {"accepted": 3, "duplicates": 0, "journeys_matched": 4}
    assert journey_hooks == [(tenant_a.tenant_id, ["e-1", "e-2", "e-3"])]
    retry = post(client, tenant_a.headers, batch).json()
    assert retry == {"accepted": 0, "duplicates": 3, "journeys_matched": 0}  # duplicates trigger nothing
    assert len(journey_hooks) == 1


def test_openapi_publishes_the_request_schema(client):
    operation = client.get("/openapi.json").json()["paths"]["/api/events/"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    single, batch = schema["oneOf"]
    assert set(single["required"]) == {"user_id", "event_type"}
    assert single["additionalProperties"] is False
    assert batch["properties"]["batch"]["maxItems"] == MAX_BATCH_ITEMS
    assert "202" in operation["responses"] and "413" in operation["responses"]
    identify = client.get("/openapi.json").json()["paths"]["/api/events/identify/"]["post"]
    assert "traits" in identify["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]["required"]
