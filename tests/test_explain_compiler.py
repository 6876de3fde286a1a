"""Explanations (compiler.explain) run by DuckDB on Parquet against the independent reference evaluator:
every leaf value equals the reference's, every node's ``held`` is "the user is in the reference's set of
that node", the root is membership (the compiled members query), the events shown are the ones counted."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import Phase, given, settings

from compiler import parse_definition, to_sql
from compiler.explain import EVENTS_PER_CONDITION, Explanation, compile_explain, find_chain
from compiler.model import Group, Sequence
from tests.compiler_cases import HOSTILE_CATALOG, HOSTILE_COLUMNS
from tests.compiler_fixtures import compile_to_sql, run_duckdb, write_lake
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import TENANT, World, scenarios

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
AS_OF = datetime(2026, 3, 15, 12, 0, 0)
DAY, US = timedelta(days=1), timedelta(microseconds=1)


class Lake:
    """A world written to Parquet (events with ids ``e<i>``), explained and evaluated by DuckDB."""

    def __init__(self, con, directory: Path, world: World, columns: tuple = (None, None)):
        self.con, self.world = con, world
        self.schema = write_lake(world, directory, *columns)
        events = pq.read_table(directory / "events.parquet")
        ids = pa.array([f"e{i:04d}" for i in range(events.num_rows)], pa.string())
        pq.write_table(events.append_column("event_id", ids), directory / "events.parquet")
        self.ids = {f"e{i:04d}": event for i, event in enumerate(world.events)}

    def rows(self, query) -> list[dict]:
        cursor = self.con.execute(to_sql(query))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def explain(self, definition: dict, user: str, segments: dict | None = None) -> Explanation:
        queries = compile_explain(parse_definition(definition), self.schema, tenant_id=self.world.tenant_id,
                                  as_of=self.world.as_of, user_id=user, resolve_segment=(segments or {}).__getitem__)
        rows = self.rows(queries.query)
        [values] = [{k: row[k] for k in queries.value_columns} for row in rows if row["in_universe"] is not None]
        return queries.assemble(values, [row for row in rows if row.get("e_at") is not None])

    def members(self, definition: dict, segments: dict | None = None) -> set[str]:
        return set(run_duckdb(self.con, compile_to_sql(definition, segments or {}, self.schema, self.world)))


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def lake_of(con, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-lakes")
    counter = iter(range(10**9))
    return lambda world, columns=(None, None): Lake(con, root / str(next(counter)), world, columns)


def _same(got, expected) -> bool:
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    return got == expected


def check_explanation(lake: Lake, reference: ReferenceEvaluator, definition: dict, segments: dict, user: str,
                      members: set[str]) -> None:
    explained = lake.explain(definition, user, segments)
    assert explained.member == (user in members), "root differs from the compiled members query"
    assert explained.in_universe == (user in reference.universe)
    for node in explained.nodes():
        as_dict = node.node.model_dump(mode="json", exclude_defaults=True)
        where = f"{node.path} of {as_dict}"
        assert node.held == (user in reference.members(as_dict)), f"held of {where}"
        if isinstance(node.node, Group):
            continue
        expected = reference.leaf_values(as_dict, user)
        if isinstance(node.node, Sequence):
            assert bool(node.events) == expected["matched"] == node.held, f"chain of {where}"
            if node.events:
                _check_chain(node, reference.step_times(as_dict, user))
            continue
        for key, value in expected.items():
            assert _same(node.values[key], value), f"{key} of {where}: {node.values[key]!r} != {value!r}"
        if as_dict["type"] in ("frequency", "monetary", "recency", "first_seen"):
            limit = 1 if as_dict["type"] == "first_seen" else EVENTS_PER_CONDITION
            shown = [event["occurred_at"] for event in node.events]
            assert shown == reference.counted_times(as_dict, user)[:limit], f"events of {where}"
            for event in node.events:
                assert lake.ids[event["event_id"]]["user_id"] == user


def _check_chain(node, step_times: list[list[datetime]]) -> None:
    times = [step["occurred_at"] for step in node.events]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] <= timedelta(days=node.node.within_days)
    for at, allowed in zip(times, step_times):
        assert at in allowed


@settings(phases=NO_SHRINK, max_examples=max(10, settings().max_examples // 4))
@given(scenarios(max_events=80, max_definitions=4))
def test_explanations_agree_with_reference_and_membership(lake_of, scenario):
    check_scenario(lake_of(scenario.world), scenario)


@settings(phases=NO_SHRINK, max_examples=max(5, settings().max_examples // 10))
@given(scenarios(catalog=HOSTILE_CATALOG, max_events=60, max_definitions=3))
def test_hostile_names_and_values(lake_of, scenario):
    """Names and values like ``'; DROP TABLE``, and typed columns named so too, stay literals and identifiers."""
    catalog = scenario.world.catalog
    rng = random.Random(len(scenario.world.events))
    properties = {n: f"{rng.choice(HOSTILE_COLUMNS)}{i}" for i, n in enumerate(sorted(catalog.properties))}
    traits = {n: f"{rng.choice(HOSTILE_COLUMNS)}{i}" for i, n in enumerate(sorted(catalog.traits))}
    check_scenario(lake_of(scenario.world, (properties, traits)), scenario)


def check_scenario(lake: Lake, scenario) -> None:
    world = scenario.world
    reference = ReferenceEvaluator(world.events, world.profiles, tenant_id=TENANT, as_of=world.as_of,
                                   segments=scenario.segments)
    rng = random.Random(len(world.events))
    for definition in scenario.definitions:
        members = lake.members(definition, scenario.segments)
        inside = sorted(members)[:1] + sorted(reference.universe - members)[:1]
        others = rng.sample(sorted(reference.universe), min(1, len(reference.universe)))
        for user in dict.fromkeys(inside + others + ["nobody"]):
            check_explanation(lake, reference, definition, scenario.segments, user, members)


# -- named cases -----------------------------------------------------------------------------
def event(user: str, event_type: str, at: datetime, **properties) -> dict:
    return {"tenant_id": TENANT, "user_id": user, "event_type": event_type, "occurred_at": at,
            "properties": properties}


def world_of(*events: dict, profiles: list[dict] | None = None) -> World:
    return World(as_of=AS_OF, events=list(events), profiles=profiles or [])


def test_window_edges(lake_of):
    edge = AS_OF - 7 * DAY
    world = world_of(event("u", "order_placed", edge, total=1.0), event("u", "order_placed", edge + US, total=2.0),
                     event("u", "order_placed", edge - US, total=4.0), event("u", "order_placed", AS_OF, total=8.0),
                     event("u", "order_placed", AS_OF + US, total=16.0))
    lake = lake_of(world)
    frequency = lake.explain({"type": "frequency", "event_type": "order_placed", "operator": "eq", "value": 2,
                              "window_days": 7}, "u").root
    assert frequency.held and frequency.values["value"] == 2  # exactly 7 days before is outside; later than as_of too
    assert [e["occurred_at"] for e in frequency.events] == [AS_OF, edge + US]
    assert frequency.window == {"start": edge, "start_inclusive": False, "end": AS_OF}
    monetary = lake.explain({"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
                             "operator": "gte", "value": 10, "window_days": 7}, "u").root
    assert monetary.values["value"] == 10.0 and monetary.held
    assert [e["properties"] for e in monetary.events] == [{"total": 8.0}, {"total": 2.0}]
    since = lake.explain({"type": "frequency", "event_type": "order_placed", "operator": "eq", "value": 3,
                          "since": (edge).isoformat() + "Z"}, "u").root
    assert since.held and since.values["value"] == 3  # since is inclusive
    # recency gt 7: no event at or after T (T itself counts); gte 7: none after T
    gt = lake.explain({"type": "recency", "event_type": "order_placed", "operator": "gt", "window_days": 7}, "u").root
    assert not gt.held and gt.values == {"value": 3, "last_at": AS_OF}
    late = world_of(event("v", "page_viewed", edge), event("v", "page_viewed", edge - DAY))
    recency = lake_of(late).explain({"type": "recency", "event_type": "page_viewed", "operator": "gte",
                                     "window_days": 7}, "v").root
    assert recency.held and recency.values == {"value": 0, "last_at": edge} and recency.events == []


def test_not_and_references(lake_of):
    world = world_of(event("a", "order_placed", AS_OF - DAY), event("b", "page_viewed", AS_OF - DAY),
                     profiles=[{"tenant_id": TENANT, "user_id": "c", "traits": {"country": "DE"}}])
    segments = {101: {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1}}
    definition = {"logic": "AND", "conditions": [
        {"logic": "NOT", "conditions": [{"type": "segment", "segment_id": 101, "operator": "in"}]},
        {"type": "trait", "trait": "country", "operator": "is_not_set"}]}
    lake = lake_of(world)
    assert lake.members(definition, segments) == {"b"}
    a, b, c = (lake.explain(definition, user, segments) for user in ("a", "b", "c"))
    assert (a.member, b.member, c.member) == (False, True, False)
    assert a.root.decided_by == [0] and c.root.decided_by == [1] and b.root.decided_by == [0, 1]
    reference = a.root.children[0].children[0]
    assert reference.held and reference.children[0].values == {"value": 1}
    assert reference.to_json()["definition"]["type"] == "frequency"
    assert b.root.to_json()["conditions"][0]["conditions"][0]["held"] is False
    assert c.root.children[1].values == {"value": "DE"} and not c.root.children[1].held


def test_sequences(lake_of):
    t = AS_OF - 10 * DAY
    world = world_of(
        # same instant does not chain; the chain found ends first and starts last
        event("u", "signup", t), event("u", "order_placed", t), event("u", "signup", t + DAY),
        event("u", "signup", t + 2 * DAY), event("u", "order_placed", t + 3 * DAY),
        # exactly within_days apart matches, a microsecond more does not
        event("w", "signup", t), event("w", "order_placed", t + 2 * DAY),
        event("x", "signup", t), event("x", "order_placed", t + 2 * DAY + US))
    definition = {"type": "sequence", "steps": [{"event_type": "signup"}, {"event_type": "order_placed"}],
                  "within_days": 2}
    lake = lake_of(world)
    u, w, x = (lake.explain(definition, user).root for user in ("u", "w", "x"))
    assert [(s["step"], s["event_type"], s["occurred_at"]) for s in u.events] == [
        (1, "signup", t + 2 * DAY), (2, "order_placed", t + 3 * DAY)]
    assert w.held and [s["occurred_at"] for s in w.events] == [t, t + 2 * DAY]
    assert not x.held and x.events == [] and x.to_json()["steps"] == []
    three = {"type": "sequence", "within_days": 30, "steps": [
        {"event_type": "signup"}, {"event_type": "signup"}, {"event_type": "order_placed"}]}
    assert [s["occurred_at"] for s in lake.explain(three, "u").root.events] == [t + DAY, t + 2 * DAY, t + 3 * DAY]


def test_unknown_user_has_every_value_at_its_empty_state(lake_of):
    lake = lake_of(world_of(event("u", "order_placed", AS_OF - DAY, total=5.0)))
    definition = {"logic": "OR", "conditions": [
        {"type": "frequency", "event_type": "order_placed", "operator": "lt", "value": 1},
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "avg", "operator": "gt",
         "value": 1},
        {"type": "recency", "operator": "gt", "window_days": 3},
        {"type": "first_seen", "operator": "gt", "window_days": 3}]}
    explained = lake.explain(definition, "nobody")
    assert not explained.in_universe and not explained.member
    assert [n.held for n in explained.nodes()] == [False] * 5
    assert [n.values for n in explained.root.children] == [
        {"value": 0}, {"value": None}, {"value": 0, "last_at": None}, {"value": None}]
    assert explained.to_json()["explanation"]["conditions"][0]["events"] == []


def test_find_chain():
    t = [datetime(2026, 1, d) for d in range(1, 10)]
    assert find_chain([[t[0], t[3]], [t[0], t[4]]], timedelta(days=1)) == [t[3], t[4]]
    assert find_chain([[t[0]], [t[0]]], timedelta(days=5)) is None
    assert find_chain([[t[0], t[1]], [t[2]], [t[3]]], timedelta(days=2)) == [t[1], t[2], t[3]]
    assert find_chain([[t[0]], [t[5]]], timedelta(days=2)) is None
