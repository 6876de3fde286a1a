"""A small hand-built world for the segment tests, written to the real Parquet lake.

Use with ``pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]``.

Every expectation in the tests is worked out by hand from the rows below and the
semantics in ``compiler.model`` — never copied from the engine's output. Times are
relative to ``AS_OF`` (previews pass it explicitly); computations run at the real "now",
so ``world`` shifts the same rows to the real clock when asked (``relative_to``).

Tenant A, seed example (sum(total of order_placed) >= 500 AND no page_viewed within
30 days, the window including its boundary T = as_of - 30 days):

    user   orders (days before as_of: total)   page_viewed (days before)  seed?
    alice  40: 300, 35: 250        (550)        -                          yes
    bob    10: 600                 (600)        2                          no (recent view)
    carol  50: 900                 (900)        45                         yes
    dave   -                                    1, 3                       no (no orders)
    erin   60: 499.5               (499.5)      -                          no (< 500)
    frank  -1 (after as_of): 1000               -                          no (future)
    gina   20: 200, 31: 300        (500)        exactly 30                 no (view at T counts)
    hank   5: 500                  (500)        30 days + 1 s              yes

Profiles A: alice {plan: pro, age: 30}, bob {plan: free}, ivy {plan: pro} (no events).
Tenant B reuses the name alice (orders of 5000) and has zed (order of 700, viewed 1 day ago).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import pyarrow as pa
import pytest

from common.time import naive_utc_now as utc_now
from tests.compiler_cases import SEED_DEFINITION  # noqa: F401 - the segment tests import it from here

AS_OF = datetime(2026, 3, 1, 12, 0, 0)
DAY = timedelta(days=1)

SEED_MEMBERS_A = {"alice", "carol", "hank"}
SEED_MEMBERS_B = {"alice"}

# (user, event_type, time before as_of, properties)
EVENTS_A = [
    ("alice", "order_placed", 40 * DAY, {"total": 300}),
    ("alice", "order_placed", 35 * DAY, {"total": 250}),
    ("bob", "order_placed", 10 * DAY, {"total": 600}),
    ("bob", "page_viewed", 2 * DAY, {"path": "/"}),
    ("carol", "order_placed", 50 * DAY, {"total": 900}),
    ("carol", "page_viewed", 45 * DAY, {"path": "/pricing"}),
    ("dave", "page_viewed", 1 * DAY, {"path": "/"}),
    ("dave", "page_viewed", 3 * DAY, {"path": "/docs"}),
    ("erin", "order_placed", 60 * DAY, {"total": 499.5}),
    ("frank", "order_placed", -1 * DAY, {"total": 1000}),
    ("gina", "order_placed", 20 * DAY, {"total": 200}),
    ("gina", "order_placed", 31 * DAY, {"total": 300}),
    ("gina", "page_viewed", 30 * DAY, {"path": "/"}),
    ("hank", "order_placed", 5 * DAY, {"total": 500}),
    ("hank", "page_viewed", 30 * DAY + timedelta(seconds=1), {"path": "/"}),
]
PROFILES_A = [
    ("alice", {"plan": "pro", "age": 30}),
    ("bob", {"plan": "free"}),
    ("ivy", {"plan": "pro"}),
]
EVENTS_B = [
    ("alice", "order_placed", 3 * DAY, {"total": 5000}),
    ("zed", "order_placed", 3 * DAY, {"total": 700}),
    ("zed", "page_viewed", 1 * DAY, {"path": "/"}),
]
PROFILES_B = [("zed", {"plan": "pro"})]
# Users of A's universe at AS_OF: an event at or before as_of, or a profile (frank only has a future event).
UNIVERSE_A = {"alice", "bob", "carol", "dave", "erin", "gina", "hank", "ivy"}


def append_events(runtime, tenant_id: int, rows, *, as_of: datetime = AS_OF) -> None:
    """Commit events given as (user, event_type, time before as_of, properties)."""
    received = utc_now()
    runtime.lake.append_events(tenant_id, pa.table({
        "event_id": [uuid.uuid4().hex for _ in rows],
        "tenant_id": pa.array([tenant_id] * len(rows), pa.int64()),
        "user_id": [user for user, *_ in rows],
        "event_type": [event_type for _, event_type, *_ in rows],
        "occurred_at": pa.array([as_of - before for _, _, before, _ in rows], pa.timestamp("us")),
        "received_at": pa.array([received] * len(rows), pa.timestamp("us")),
        "properties": [orjson.dumps(props).decode() for *_, props in rows],
    }))


def upsert_profiles(runtime, tenant_id: int, rows) -> None:
    runtime.lake.upsert_profiles(tenant_id, [
        {"user_id": user, "traits": traits, "updated_at": datetime(2026, 1, 1)} for user, traits in rows])


@dataclass
class World:
    as_of: datetime
    tenant_a: int
    tenant_b: int


def load_world(runtime, tenant_a: int, tenant_b: int, as_of: datetime = AS_OF) -> World:
    append_events(runtime, tenant_a, EVENTS_A, as_of=as_of)
    upsert_profiles(runtime, tenant_a, PROFILES_A)
    append_events(runtime, tenant_b, EVENTS_B, as_of=as_of)
    upsert_profiles(runtime, tenant_b, PROFILES_B)
    return World(as_of, tenant_a, tenant_b)


@pytest.fixture
def world(runtime, tenants) -> World:
    """The table above in both tenants' lakes, relative to the fixed ``AS_OF``."""
    return load_world(runtime, tenants.a.tenant_id, tenants.b.tenant_id)


@pytest.fixture
def live_world(runtime, tenants) -> World:
    """The same rows relative to the real clock (for computations, which run at now).
    Whole minutes back, so no row sits on a window boundary of a computation run moments later
    (the boundary rows of gina and hank then fall just outside their 30-day windows)."""
    return load_world(runtime, tenants.a.tenant_id, tenants.b.tenant_id,
                      as_of=utc_now().replace(second=0, microsecond=0) - timedelta(minutes=1))


def create_segment(client, headers, definition=None, **fields) -> dict:
    body = {"name": fields.pop("name", "High-Value Churners"), "segment_type": "rule", **fields}
    if definition is not None:
        body["definition"] = definition
    response = client.post("/api/segments/", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()
