"""Named worlds, definitions and catalogs shared by the compiler tests (DuckDB, hostile, Spark)."""
from __future__ import annotations

from datetime import datetime, timedelta

from tests.segment_strategies import TENANT, Catalog, World

# -- the seed example (segops-segments-api: "High-Value Churners") ----------------------------
SEED_AS_OF = datetime(2026, 4, 25, 12, 0, 0)
SEED_DEFINITION = {
    "logic": "AND",
    "conditions": [
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
         "operator": "gte", "value": 500},
        {"type": "recency", "event_type": "page_viewed", "operator": "gt", "window_days": 30},
    ],
}


def seed_world() -> World:
    """Who should match is written next to each user; the reference must agree (checked below)."""
    def event(user, event_type, days_ago, tenant=TENANT, **properties):
        return {"tenant_id": tenant, "user_id": user, "event_type": event_type,
                "occurred_at": SEED_AS_OF - timedelta(days=days_ago), "properties": properties}

    events = [
        # churner: spent 300 + 250, last page view 45 days ago -> member
        event("churner", "order_placed", 60, total=300), event("churner", "order_placed", 40, total=250),
        event("churner", "page_viewed", 45),
        # loyal: spent 900 but viewed a page 2 days ago -> not a member
        event("loyal", "order_placed", 50, total=900), event("loyal", "page_viewed", 2),
        # boundary: spent exactly 500, last view exactly 30 days ago (inside the 30 days) -> not a member
        event("boundary", "order_placed", 31, total=500), event("boundary", "page_viewed", 30),
        # just_out: spent exactly 500, last view 30 days + 1 s ago -> member
        event("just_out", "order_placed", 31, total=500),
        event("just_out", "page_viewed", 30 + 1 / 86400),
        # small: spent 499.75, never viewed a page -> not a member
        event("small", "order_placed", 3, total=499.75), event("small", "order_placed", 4, total=None),
        # late: the big order lies after as_of -> not a member
        event("late", "order_placed", -1, total=5000), event("late", "order_placed", 90, total=1),
        # never_viewed: spent 600 and never viewed a page -> member
        event("never_viewed", "order_placed", 10, total=600),
        # the other tenant's big spenders (one with the same user id as "loyal") must not leak
        event("loyal", "order_placed", 5, tenant=2, total=10000),
        event("ghost", "order_placed", 5, tenant=2, total=10000),
    ]
    profiles = [{"tenant_id": TENANT, "user_id": "profile_only", "traits": {"country": "DE"}}]
    return World(as_of=SEED_AS_OF, events=events, profiles=profiles)


SEED_MEMBERS = {"churner", "just_out", "never_viewed"}


# One definition per condition type (and every filter operator), on DEFAULT_CATALOG names.
EXAMPLE_SEGMENTS = {101: {"type": "trait", "trait": "country", "operator": "in", "value": ["DE", "a"]}}
EXAMPLE_DEFINITIONS = {
    "frequency": {"type": "frequency", "event_type": "order_placed", "operator": "between", "value": [1, 2],
                  "window_days": 30, "where": [{"property": "total", "operator": "gte", "value": 100}]},
    "monetary": {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "avg",
                 "operator": "gt", "value": 120.5, "since": "2026-01-01", "until": "2026-04-20T00:00:00Z"},
    "recency": {"type": "recency", "operator": "lte", "window_days": 7},
    "first_seen": {"type": "first_seen", "operator": "gt", "window_days": 30},
    "trait": {"type": "trait", "trait": "country", "operator": "is_not_set"},
    # code point order: "DE" < "a" (a collation like ICU en-US puts "a" first)
    "string_order": {"type": "trait", "trait": "country", "operator": "lt", "value": "a"},
    "sequence": {"type": "sequence", "within_days": 20, "window_days": 90,
                 "steps": [{"event_type": "order_placed"}, {"event_type": "page_viewed"},
                           {"event_type": "order_placed",
                            "where": [{"property": "total", "operator": "lt", "value": 1000}]}]},
    "segment": {"type": "segment", "segment_id": 101, "operator": "not_in"},
    "filters": {"logic": "OR", "conditions": [
        {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1, "where": [
            {"property": "coupon", "operator": "contains", "value": "a%"},
            {"property": "plan", "operator": "starts_with", "value": "a_"}]},
        {"type": "frequency", "event_type": "order_placed", "operator": "eq", "value": 0, "where": [
            {"property": "plan", "operator": "not_in", "value": ["a", "b"]},
            {"property": "is_gift", "operator": "neq", "value": True},
            {"property": "paid_at", "operator": "between", "value": ["2026-03-01", "2026-04-01T10:00:00+02:00"]}]},
        {"logic": "NOT", "conditions": [{"type": "trait", "trait": "age", "operator": "between", "value": [18, 30.5]}]},
        {"type": "trait", "trait": "vip", "operator": "eq", "value": True},
        {"type": "trait", "trait": "signed_up_at", "operator": "lt", "value": "2026-04-01T00:00:00Z"},
        {"type": "trait", "trait": "email", "operator": "is_set"},
    ]},
}


# -- hostile names and values -------------------------------------------------------------------
DROP = "'; DROP TABLE sentinel; --"
HOSTILE_STRINGS = (
    "", "'", "''", "a'b", DROP, "\"; DROP TABLE sentinel; --", "/* x */", "*/ select 1 /*", "--", "%", "_",
    "a%b", "a_b", "\\", "\\'", "\\%", "$$", "$1", "?", ":name", "select", "DROP TABLE sentinel", "é", "e\u0301",
    "🎉", "\u202e", "名前", "x" * 1000, "'" * 1000,
)
HOSTILE_CATALOG = Catalog(
    event_types=("order'placed", "page; DROP TABLE sentinel; --", "/*sign*/up", "ünï\"code"),
    properties={
        "total'; DROP TABLE sentinel; --": "number",
        '"plan"': "string",
        "select": "string",
        "a/* c */b": "boolean",
        "naïve ✓ 名前": "string",
        "back\\slash%_": "timestamp",
        "n" * 128: "number",
    },
    traits={
        "country'--": "string",
        "drop table x": "string",
        '"vip"': "boolean",
        "emoji 🎉": "number",
        "%_\\": "timestamp",
        "age;": "number",
    },
    strings=HOSTILE_STRINGS,
    fragments=("'", "%", "_", "\\", "\\%", "--", "/*", "e\u0301", "", "'; DROP", "a%", "x" * 999),
    user_ids=("u'1", 'u"2', "u;3--", "ü4", "u 5", "u\\6", "u%7", "u_8", "u/*9*/", "DROP TABLE sentinel"),
)
HOSTILE_COLUMNS = ['a"b; --c', "p 'q'", "select", "a.b", "p\\", "col/*x*/", "ü \"\" ''", "drop table sentinel;"]
