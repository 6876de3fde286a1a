"""Sequence conditions in DuckDB: every path of compiler.sequence against hand-derived answers,
and random timelines against a brute-force search over all chains.

The compiled SQL decides most users with greedy MIN/MAX joins and sends only users whose
earliest chain is too long through window functions; when the window is no longer than
``within_days`` it only asks whether any chain exists. The hand-built users below each
take one of these paths; the property test throws dense timelines with ties, repeated
event types and spans right at ``within_days`` at all of them.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlglot import exp

from compiler import EventsRelation, LakeSchema, ProfilesRelation, TypedColumn, compile_segment, to_sql

AS_OF = datetime(2026, 3, 30, 12)  # window_days=30 starts 2026-02-28 12:00, before every event
D0 = datetime(2026, 3, 1)
US = timedelta(microseconds=1)
SCHEMA = LakeSchema(
    events=EventsRelation(exp.to_table("events"), properties={"amount": TypedColumn("amount", "number")}),
    profiles=ProfilesRelation(exp.to_table("profiles")),
)


def at(day: float, hours: float = 0) -> datetime:
    return D0 + timedelta(days=day, hours=hours)


def con_with(events: list[tuple]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``events`` (user, event_type, occurred_at[, amount]) of tenant 1, plus
    another tenant's a -> b and an a -> b completed after as_of: neither may ever count."""
    rows = [(1, *e) if len(e) == 4 else (1, *e, None) for e in events]
    rows += [(2, "intruder", "a", at(1), None), (2, "intruder", "b", at(1, 1), None),
             (1, "too_late", "a", AS_OF, None), (1, "too_late", "b", AS_OF + US, None)]
    columns = list(zip(*rows))
    table = pa.table({
        "tenant_id": pa.array(columns[0], pa.int64()), "user_id": pa.array(columns[1], pa.string()),
        "event_type": pa.array(columns[2], pa.string()), "occurred_at": pa.array(columns[3], pa.timestamp("us")),
        "event_date": pa.array([moment.date() for moment in columns[3]], pa.date32()),
        "amount": pa.array(columns[4], pa.float64()),
    })
    con = duckdb.connect()
    con.register("events", table)
    con.register("profiles", pa.table({"tenant_id": pa.array([], pa.int64()), "user_id": pa.array([], pa.string())}))
    return con


def sequence(*event_types: str, within_days: int = 1, **window) -> dict:
    return {"type": "sequence", "within_days": within_days,
            "steps": [{"event_type": t} for t in event_types], **window}


def members(con: duckdb.DuckDBPyConnection, definition: dict) -> set[str]:
    sql = to_sql(compile_segment(definition, SCHEMA, tenant_id=1, as_of=AS_OF))
    users = [row[0] for row in con.execute(sql).fetchall()]
    assert len(users) == len(set(users)), "user ids must be distinct"
    return set(users)


# Steps a -> b -> c within 1 day; each user takes one path through the compiled SQL.
FUNNEL_EVENTS = [
    ("quick", "a", at(0)), ("quick", "b", at(0, 1)), ("quick", "c", at(0, 2)),  # greedy chain fits
    # greedy chain of exactly 1 day, then another chain (not to be counted twice)
    ("exact", "a", at(0)), ("exact", "b", at(0, 12)), ("exact", "c", at(1)),
    ("exact", "a", at(2)), ("exact", "b", at(2, 1)), ("exact", "c", at(2, 2)),
    ("backwards", "c", at(0)), ("backwards", "b", at(0, 1)), ("backwards", "a", at(0, 2)),  # no chain
    ("no_c", "a", at(0)), ("no_c", "b", at(0, 1)),
    # forward greedy starts at day 0 (too long); the latest start before the earliest end is day 3
    ("restart", "a", at(0)), ("restart", "a", at(3)), ("restart", "b", at(3, 1)), ("restart", "c", at(3, 2)),
    # earliest chain a@0 b@3 c@3+1h is too long whichever way; a later one fits (window pipeline)
    ("late", "a", at(0)), ("late", "b", at(3)), ("late", "c", at(3, 1)),
    ("late", "a", at(10)), ("late", "b", at(10, 12)), ("late", "c", at(11)),  # exactly 1 day
    # the same, but the later chain is 1 microsecond too long, and another lacks a b after its a
    ("late_over", "a", at(0)), ("late_over", "b", at(3)), ("late_over", "c", at(3, 1)),
    ("late_over", "a", at(10)), ("late_over", "b", at(10, 12)), ("late_over", "c", at(11) + US),
    ("late_over", "a", at(20)), ("late_over", "c", at(20, 1)),
    # ties: b at the same instant as a does not follow it; c at the same instant as b neither
    ("tie", "a", at(0)), ("tie", "b", at(0)), ("tie", "c", at(0, 1)),
    ("tie", "a", at(5)), ("tie", "b", at(5, 1)), ("tie", "c", at(5, 1)),
    ("together", "a", at(1)), ("together", "b", at(1)), ("together", "c", at(1)),  # never a chain
    # undecided by the greedy chains, then decided by a tie-free chain after a tie
    ("late_tie", "a", at(0)), ("late_tie", "b", at(2)), ("late_tie", "c", at(2, 1)),
    ("late_tie", "a", at(6)), ("late_tie", "b", at(6)), ("late_tie", "b", at(6) + US), ("late_tie", "c", at(6, 1)),
]


@pytest.fixture(scope="module")
def funnel_con():
    con = con_with(FUNNEL_EVENTS)
    yield con
    con.close()


@pytest.mark.parametrize("definition, expected", [
    (sequence("a", "b", "c"), {"quick", "exact", "restart", "late", "late_tie"}),
    (sequence("a", "b", "c", within_days=3), {"quick", "exact", "restart", "late", "late_over", "late_tie"}),
    # two steps: late and late_over go through the window pipeline and find a later chain
    (sequence("a", "c"), {"quick", "exact", "restart", "late", "late_over", "tie", "late_tie"}),
    # the window (from day 10) leaves late's and late_over's last chains: short enough or not
    (sequence("a", "b", "c", since="2026-03-11T00:00:00Z"), {"late"}),
    # windows no longer than within_days: any ordered a, b, c inside is a chain (until is inclusive)
    (sequence("a", "b", "c", since="2026-03-11", until="2026-03-12"), {"late"}),
    (sequence("a", "b", "c", within_days=30, window_days=30),
     {"quick", "exact", "restart", "late", "late_over", "late_tie"}),
    (sequence("a", "b", within_days=30, window_days=30),
     {"quick", "exact", "no_c", "restart", "late", "late_over", "tie", "late_tie"}),
    (sequence("a", "c", within_days=30, window_days=30),
     {"quick", "exact", "restart", "late", "late_over", "tie", "late_tie"}),
    (sequence("b", "a", within_days=30, window_days=30),
     {"backwards", "exact", "late", "late_over", "tie", "late_tie"}),
    (sequence("a", "a", within_days=3), {"restart", "exact"}),  # 3 and 2 days; the others' a's are further apart
    (sequence("a", "a", "a", within_days=20), {"late_over"}),  # days 0, 10, 20
])
def test_funnel_paths(funnel_con, definition, expected):
    assert members(funnel_con, definition) == expected


def test_only_undecided_users_reach_the_window_functions(funnel_con):
    """White-box: the window pipeline sees exactly the users whose earliest chain is too long,
    and only their rows after that chain's start."""
    query = compile_segment(sequence("a", "b", "c"), SCHEMA, tenant_id=1, as_of=AS_OF)
    rows = exp.select("user_id", "occurred_at").from_("sequence_1_rest")
    rows.set("with_", query.args["with_"].copy())
    got = funnel_con.execute(to_sql(rows)).fetchall()
    assert {user for user, _ in got} == {"late", "late_over", "late_tie"}  # no chain: tie; short: the rest
    assert min(moment for user, moment in got if user == "late") == at(3)  # after the start a@0


@pytest.mark.parametrize("moment", [datetime(2026, 3, 29), AS_OF - timedelta(days=2, hours=12) - US])
def test_same_instant_is_no_chain_in_a_short_window(moment):
    """BUG-2 (differential tests): with the window shorter than within_days, two steps at one instant."""
    definition = {"type": "sequence", "steps": [{"event_type": "cart_add"}, {"event_type": "signup"}],
                  "within_days": 7, "window_days": 3}
    for signup, expected in ((moment, set()), (moment + US, {"u00"})):
        con = con_with([("u00", "cart_add", moment), ("u00", "signup", signup)])
        assert members(con, definition) == expected
        con.close()


def test_where_filters_pick_the_step_events():
    con = con_with([
        ("big", "order", at(0), 500.0), ("big", "order", at(0, 1), 20.0),
        ("small_first", "order", at(0), 20.0), ("small_first", "order", at(0, 1), 500.0),
        ("missing", "order", at(0), None), ("missing", "order", at(0, 1), None),
    ])
    big_then_any = {"type": "sequence", "within_days": 1, "steps": [
        {"event_type": "order", "where": [{"property": "amount", "operator": "gte", "value": 100}]},
        {"event_type": "order"}]}
    assert members(con, big_then_any) == {"big"}
    assert members(con, {**big_then_any, "window_days": 1}) == set()  # all before as_of - 1 day
    assert members(con, {**big_then_any, "window_days": 40}) == {"big"}
    con.close()


# -- random timelines against brute force -------------------------------------------------------
TYPES = ("a", "b", "c")
# 6-hour grid over the 8 days before as_of plus 1-microsecond nudges: ties, spans of exactly
# 1, 2, 3 days and one microsecond more, window boundaries; the last moment is after as_of
MOMENTS = [AS_OF - timedelta(days=8, hours=-6 * i) + nudge for i in range(33) for nudge in (timedelta(0), US)]


def chain_exists(events: list[tuple[str, datetime, float | None]], steps: list[dict], within: timedelta) -> bool:
    """Depth-first search over all chains (strictly increasing times)."""
    def matches(event, step) -> bool:
        event_type, _, amount = event
        needs_big = bool(step.get("where"))
        return event_type == step["event_type"] and (not needs_big or (amount is not None and amount >= 100))

    def extend(index: int, after: datetime, start: datetime | None) -> bool:
        if index == len(steps):
            return True
        for event in events:
            moment = event[1]
            if moment > after and matches(event, steps[index]):
                first = moment if start is None else start
                if moment - first <= within and extend(index + 1, moment, first):
                    return True
        return False

    return extend(0, datetime.min, None)


@st.composite
def cases(draw):
    types = TYPES[:draw(st.integers(2, 3))]  # fewer types: more chains
    events = []
    for user in ("u1", "u2", "u3", "u4", "u5"):
        for _ in range(draw(st.integers(0, 12))):
            events.append((user, draw(st.sampled_from(types)), draw(st.sampled_from(MOMENTS)),
                           draw(st.sampled_from([None, 20.0, 500.0]))))
    steps = [{"event_type": t} for t in draw(st.lists(st.sampled_from(types), min_size=2, max_size=4))]
    for step in steps:
        if draw(st.integers(0, 4)) == 0:
            step["where"] = [{"property": "amount", "operator": "gte", "value": 100}]
    definition = {"type": "sequence", "steps": steps, "within_days": draw(st.integers(1, 3))}
    window = draw(st.sampled_from(["none", "window_days", "since", "since_until"]))
    if window == "window_days":
        definition["window_days"] = draw(st.integers(1, 9))
    elif window != "none":
        since = draw(st.sampled_from(MOMENTS))
        definition["since"] = since.isoformat()
        if window == "since_until":
            definition["until"] = (since + timedelta(days=draw(st.integers(0, 6)))).isoformat()
    return events, definition


@given(cases())
def test_random_timelines_match_brute_force(case):
    events, definition = case
    as_of = AS_OF
    if "window_days" in definition:
        lower = as_of - timedelta(days=definition["window_days"])
        kept = [e for e in events if lower < e[2] <= as_of]
    else:
        since = datetime.fromisoformat(definition.get("since", "0001-01-01"))
        until = datetime.fromisoformat(definition.get("until", as_of.isoformat()))
        kept = [e for e in events if since <= e[2] <= min(until, as_of)]
    within = timedelta(days=definition["within_days"])
    expected = {user for user in {e[0] for e in kept}
                if chain_exists([e[1:] for e in kept if e[0] == user], definition["steps"], within)}
    con = con_with(events)
    try:
        assert members(con, definition) == expected
    finally:
        con.close()
