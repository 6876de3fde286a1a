"""Sanity checks of the test oracle on a tiny world whose answers were worked out by hand.

Tenant 1 at AS_OF (days are before AS_OF):
  u1: page_viewed 40d; order_placed 10d (total 450, coupon "50%OFF"); order_placed 1d (total 100)
  u2: signup 50d; page_viewed exactly 30d; order_placed 5d (total null, coupon "5_OFF")
  u3: order_placed 1h AFTER as_of only  -> not in the universe
  u4: profile only (country "DE");  u1 has a profile without country (age 30)
Tenant 2 (must never show up): u1 order_placed 1d total 10000, u5 page_viewed 1d.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.reference_eval import ReferenceEvaluator

AS_OF = datetime(2026, 3, 15, 12, 0, 0)
DAY = timedelta(days=1)


def _event(tenant, user, event_type, before, **properties):
    return {"tenant_id": tenant, "user_id": user, "event_type": event_type,
            "occurred_at": AS_OF - before, "properties": properties}


EVENTS = [
    _event(1, "u1", "page_viewed", 40 * DAY),
    _event(1, "u1", "order_placed", 10 * DAY, total=450, coupon="50%OFF"),
    _event(1, "u1", "order_placed", 1 * DAY, total=100),
    _event(1, "u2", "signup", 50 * DAY),
    _event(1, "u2", "page_viewed", 30 * DAY),
    _event(1, "u2", "order_placed", 5 * DAY, total=None, coupon="5_OFF"),
    _event(1, "u3", "order_placed", -timedelta(hours=1), total=1000),
    _event(2, "u1", "order_placed", 1 * DAY, total=10000),
    _event(2, "u5", "page_viewed", 1 * DAY),
]
PROFILES = [
    {"tenant_id": 1, "user_id": "u4", "traits": {"country": "DE"}},
    {"tenant_id": 1, "user_id": "u1", "traits": {"age": 30}},
    {"tenant_id": 2, "user_id": "u9", "traits": {"country": "DE"}},
]
SEGMENTS = {7: {"logic": "AND", "conditions": [{"type": "trait", "trait": "country", "operator": "eq", "value": "DE"}]}}


@pytest.fixture(scope="module")
def ref():
    return ReferenceEvaluator(EVENTS, PROFILES, tenant_id=1, as_of=AS_OF, segments=SEGMENTS)


def _and(*conditions):
    return {"logic": "AND", "conditions": list(conditions)}


def test_universe_excludes_future_only_users_and_other_tenants(ref):
    assert ref.universe == {"u1", "u2", "u4"}


def test_seed_high_value_churners(ref):
    seed = _and(
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
         "operator": "gte", "value": 500},
        {"type": "recency", "event_type": "page_viewed", "operator": "gt", "window_days": 30},
    )
    assert ref.members(seed) == {"u1"}


@pytest.mark.parametrize("operator, expected", [
    ("gt", {"u1", "u4"}),          # u2 viewed exactly at T: counts as "within 30 days"
    ("gte", {"u1", "u2", "u4"}),   # ... but not as "after T"
    ("lt", set()),
    ("lte", {"u2"}),
])
def test_recency_boundaries(ref, operator, expected):
    condition = {"type": "recency", "event_type": "page_viewed", "operator": operator, "window_days": 30}
    assert ref.members(condition) == expected


def test_recency_without_event_type_means_any_event(ref):
    assert ref.members({"type": "recency", "operator": "lt", "window_days": 6}) == {"u1", "u2"}
    assert ref.members({"type": "recency", "operator": "gt", "window_days": 6}) == {"u4"}


@pytest.mark.parametrize("condition, expected", [
    ({"operator": "eq", "value": 2}, {"u1"}),
    ({"operator": "eq", "value": 0}, {"u4"}),                    # zero for users without events
    ({"operator": "gte", "value": 1, "window_days": 10}, {"u1", "u2"}),  # exactly 10d ago is outside
    ({"operator": "gte", "value": 2, "window_days": 10}, set()),
    ({"operator": "between", "value": [1, 1]}, {"u2"}),
    ({"operator": "neq", "value": 1}, {"u1", "u4"}),
    ({"operator": "gte", "value": 2, "since": "2026-03-05T12:00:00Z", "until": "2026-03-14T12:00:00Z"}, {"u1"}),
    ({"operator": "gte", "value": 1, "since": "2026-03-14T12:00:01Z", "until": "2027-01-01T00:00:00Z"}, set()),
    ({"operator": "eq", "value": 1, "where": [{"property": "total", "operator": "gte", "value": 200}]}, {"u1"}),
    ({"operator": "eq", "value": 1, "where": [{"property": "total", "operator": "is_not_set"}]}, {"u2"}),
])
def test_frequency(ref, condition, expected):
    assert ref.members({"type": "frequency", "event_type": "order_placed", **condition}) == expected


@pytest.mark.parametrize("metric, operator, value, expected", [
    ("sum", "gte", 550, {"u1"}),
    ("sum", "eq", 0, {"u2", "u4"}),          # no events / only null totals -> 0
    ("count", "eq", 0, {"u2", "u4"}),        # count ignores null property values
    ("count", "eq", 2, {"u1"}),
    ("avg", "lt", 1000, {"u1"}),             # avg is null for u2/u4: never matches
    ("avg", "eq", 275, {"u1"}),
    ("min", "eq", 100, {"u1"}),
    ("max", "between", [400, 450], {"u1"}),
    ("max", "neq", 1, {"u1"}),
])
def test_monetary(ref, metric, operator, value, expected):
    condition = {"type": "monetary", "event_type": "order_placed", "property": "total",
                 "metric": metric, "operator": operator, "value": value}
    assert ref.members(condition) == expected


def test_monetary_on_unknown_property(ref):
    base = {"type": "monetary", "event_type": "order_placed", "property": "nope", "operator": "eq", "value": 0}
    assert ref.members({**base, "metric": "sum"}) == {"u1", "u2", "u4"}
    assert ref.members({**base, "metric": "min"}) == set()


@pytest.mark.parametrize("operator, days, expected", [
    ("gt", 45, {"u2"}),
    ("lt", 45, {"u1"}),
    ("gte", 40, {"u1", "u2"}),
    ("lt", 40, set()),
    ("lte", 40, {"u1"}),
])
def test_first_seen(ref, operator, days, expected):
    assert ref.members({"type": "first_seen", "operator": operator, "window_days": days}) == expected


@pytest.mark.parametrize("operator, value, expected", [
    ("eq", "DE", {"u4"}),
    ("neq", "DE", set()),                 # null fails neq
    ("is_not_set", None, {"u1", "u2"}),   # u2 has no profile at all
    ("is_set", None, {"u4"}),
    ("not_in", ["FR"], {"u4"}),
    ("starts_with", "D", {"u4"}),
])
def test_trait_country(ref, operator, value, expected):
    assert ref.members({"type": "trait", "trait": "country", "operator": operator, "value": value}) == expected


def test_trait_number(ref):
    assert ref.members({"type": "trait", "trait": "age", "operator": "gt", "value": 20}) == {"u1"}


@pytest.mark.parametrize("operator, value, expected", [
    ("contains", "%", {"u1"}),       # literal percent, not a wildcard
    ("starts_with", "5_", {"u2"}),   # literal underscore
    ("contains", "off", set()),      # case-sensitive
    ("contains", "OFF", {"u1", "u2"}),
])
def test_where_string_operators_are_literal(ref, operator, value, expected):
    condition = {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1,
                 "where": [{"property": "coupon", "operator": operator, "value": value}]}
    assert ref.members(condition) == expected


@pytest.mark.parametrize("within, window, expected", [
    (30, None, {"u1", "u2"}),   # u1: 40d -> 10d is exactly 30 days: inclusive
    (26, None, {"u2"}),
    (30, 35, {"u2"}),           # u1's page view falls outside the window
])
def test_sequence(ref, within, window, expected):
    condition = {"type": "sequence", "within_days": within,
                 "steps": [{"event_type": "page_viewed"}, {"event_type": "order_placed"}]}
    if window:
        condition["window_days"] = window
    assert ref.members(condition) == expected


def test_sequence_needs_strictly_increasing_times():
    at = AS_OF - DAY
    events = [
        {"tenant_id": 1, "user_id": "same", "event_type": "a", "occurred_at": at, "properties": {}},
        {"tenant_id": 1, "user_id": "same", "event_type": "b", "occurred_at": at, "properties": {}},
        {"tenant_id": 1, "user_id": "later", "event_type": "b", "occurred_at": at, "properties": {}},
        {"tenant_id": 1, "user_id": "later", "event_type": "a", "occurred_at": at - DAY, "properties": {}},
        {"tenant_id": 1, "user_id": "later", "event_type": "a", "occurred_at": at + timedelta(seconds=1),
         "properties": {}},
    ]
    ref = ReferenceEvaluator(events, [], tenant_id=1, as_of=AS_OF)
    steps = [{"event_type": "a"}, {"event_type": "b"}]
    assert ref.members({"type": "sequence", "steps": steps, "within_days": 3}) == {"later"}
    # a, b, a: the chain needs a later "a" after the "b"
    steps3 = steps + [{"event_type": "a"}]
    assert ref.members({"type": "sequence", "steps": steps3, "within_days": 3}) == {"later"}
    assert ref.members({"type": "sequence", "steps": steps3, "within_days": 1}) == set()


def test_groups_and_segments(ref):
    de = {"type": "trait", "trait": "country", "operator": "eq", "value": "DE"}
    assert ref.members({"logic": "NOT", "conditions": [de]}) == {"u1", "u2"}
    early = {"type": "first_seen", "operator": "gt", "window_days": 45}
    assert ref.members({"logic": "OR", "conditions": [de, early]}) == {"u2", "u4"}
    assert ref.members(_and(de, early)) == set()
    assert ref.members({"type": "segment", "segment_id": 7, "operator": "in"}) == {"u4"}
    assert ref.members({"type": "segment", "segment_id": 7, "operator": "not_in"}) == {"u1", "u2"}


@pytest.mark.parametrize("operator, value, expected", [
    ("lt", "2026-03-11", {"a"}),                                   # a bare date is midnight UTC
    ("eq", "2026-03-12T02:00:00+02:00", {"b"}),                    # offsets convert to UTC
    ("between", ["2026-03-10T08:00:00Z", "2026-03-12"], {"a", "b"}),
    ("in", ["2026-03-10T10:00:00+02:00", "2027-01-01"], {"a"}),
    ("neq", "2026-03-10T08:00:00", {"b"}),                         # no offset means UTC
    ("is_not_set", None, {"c"}),
])
def test_timestamp_properties_compare_as_instants(operator, value, expected):
    def order(user, paid_at):
        properties = {} if paid_at is None else {"paid_at": paid_at}
        return {"tenant_id": 1, "user_id": user, "event_type": "order", "occurred_at": AS_OF - DAY,
                "properties": properties}

    events = [order("a", datetime(2026, 3, 10, 8)), order("b", datetime(2026, 3, 12)), order("c", None)]
    ref = ReferenceEvaluator(events, [], tenant_id=1, as_of=AS_OF)
    where = {"property": "paid_at", "operator": operator}
    if value is not None:
        where["value"] = value
    condition = {"type": "frequency", "event_type": "order", "operator": "gte", "value": 1, "where": [where]}
    assert ref.members(condition) == expected


def test_since_as_a_bare_date_starts_at_midnight(ref):
    since_midnight = {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1,
                      "since": "2026-03-14"}
    assert ref.members(since_midnight) == {"u1"}  # u1's order at 2026-03-14 12:00


def test_mixed_value_types_are_a_generator_bug():
    events = [{"tenant_id": 1, "user_id": u, "event_type": "e", "occurred_at": AS_OF, "properties": {"p": v}}
              for u, v in (("a", 1), ("b", "1"))]
    with pytest.raises(ValueError, match="mixed value types"):
        ReferenceEvaluator(events, [], tenant_id=1, as_of=AS_OF)
