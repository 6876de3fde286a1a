"""Differential tests: compiled SQL run by DuckDB on Parquet == the independent reference evaluator.

Random worlds (two tenants, events around as_of and exactly on window
boundaries, nulls and missing properties, profiles) and random definitions of
every node type, nested up to depth 4 with segment references. A failure is
shrunk by ``compiler_fixtures.minimize`` (hypothesis cannot shrink the seeds).
``HYPOTHESIS_PROFILE=thorough`` runs thousands of examples.
"""
from __future__ import annotations

from datetime import timedelta, timezone

import duckdb
import pytest
import sqlglot
from hypothesis import Phase, given, settings

from compiler import DIALECTS, compile_segment, parse_definition, to_sql
from tests.compiler_cases import (
    EXAMPLE_DEFINITIONS, EXAMPLE_SEGMENTS, SEED_AS_OF, SEED_DEFINITION, SEED_MEMBERS, seed_world,
)
from tests.compiler_fixtures import Case, DuckDBChecker, check_all, compile_to_sql, run_duckdb, write_lake
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import TENANT, World, definitions, scenarios

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    con = duckdb.connect()
    yield DuckDBChecker(con, tmp_path_factory.mktemp("lakes"))
    con.close()


@settings(phases=NO_SHRINK)
@given(scenarios())
def test_compiled_sql_matches_reference(checker, scenario):
    check_all(checker, scenario.world, scenario.definitions, scenario.segments)


@pytest.fixture(scope="module")
def hive_checker(tmp_path_factory):
    con = duckdb.connect()
    yield DuckDBChecker(con, tmp_path_factory.mktemp("hive-lakes"), hive=True)
    con.close()


@settings(phases=NO_SHRINK, max_examples=max(10, settings().max_examples // 5))
@given(scenarios())
def test_hive_partitioned_lake_matches_reference(hive_checker, scenario):
    """The lake's layout: event_date comes from the directory names, where partition pruning applies."""
    check_all(hive_checker, scenario.world, scenario.definitions, scenario.segments)


# -- the seed example (segops-segments-api: "High-Value Churners") -------------------------


def test_seed_example(checker):
    world = seed_world()
    reference = ReferenceEvaluator(world.events, world.profiles, tenant_id=TENANT, as_of=SEED_AS_OF)
    assert reference.members(SEED_DEFINITION) == SEED_MEMBERS
    assert checker.problem(Case(world, SEED_DEFINITION, {})) is None


def test_example_definitions(checker):
    check_all(checker, seed_world(), list(EXAMPLE_DEFINITIONS.values()), EXAMPLE_SEGMENTS)


# -- every dialect renders SQL that its own parser reads back ----------------------------
@pytest.fixture(scope="module")
def seed_schema(tmp_path_factory):
    world = seed_world()
    return world, write_lake(world, tmp_path_factory.mktemp("parse-back"))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_parses_back_examples(seed_schema, dialect):
    world, schema = seed_schema
    for definition in [SEED_DEFINITION, *EXAMPLE_DEFINITIONS.values()]:
        sql = compile_to_sql(definition, EXAMPLE_SEGMENTS, schema, world, dialect)
        assert isinstance(sqlglot.parse_one(sql, read=dialect), sqlglot.exp.Query), (dialect, definition)


# parsing large queries in 7 dialects is slow: a fifth of the profile's examples
@settings(max_examples=max(10, settings().max_examples // 5))
@given(definitions(SEED_AS_OF, segment_ids=tuple(EXAMPLE_SEGMENTS)))
def test_every_dialect_parses_back_random(seed_schema, definition):
    world, schema = seed_schema
    for dialect in DIALECTS:
        sql = compile_to_sql(definition, EXAMPLE_SEGMENTS, schema, world, dialect)
        assert isinstance(sqlglot.parse_one(sql, read=dialect), sqlglot.exp.Query), (dialect, definition)


def test_aware_as_of_means_the_same_instant(checker, tmp_path):
    """as_of with an offset is converted to UTC (the lake's naive timestamps are UTC)."""
    world = seed_world()
    schema = write_lake(world, tmp_path)
    aware = SEED_AS_OF.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(hours=5, minutes=30)))
    query = compile_segment(parse_definition(SEED_DEFINITION), schema, tenant_id=TENANT, as_of=aware)
    assert set(run_duckdb(checker.con, to_sql(query, "duckdb"))) == SEED_MEMBERS


def test_extreme_numbers(checker):
    """Literals at the edges of the number range render as numbers every engine reads back exactly."""
    at = SEED_AS_OF - timedelta(days=1)
    totals = {"huge": 1e300, "tiny": -1e300, "tenth": 0.1, "pow62": float(2**62), "small": 1e-7, "null": None}
    events = [{"tenant_id": TENANT, "user_id": user, "event_type": "order_placed", "occurred_at": at,
               "properties": {"total": total}} for user, total in totals.items()]
    world = World(as_of=SEED_AS_OF, events=events, profiles=[])

    def where(operator, value):
        return {"type": "frequency", "event_type": "order_placed", "operator": "eq", "value": 1,
                "where": [{"property": "total", "operator": operator, "value": value}]}

    definitions = {
        "count below int64 max": ({"type": "frequency", "event_type": "order_placed", "operator": "lt",
                                   "value": 2**63 - 1}, set(totals)),
        "max >= 1e300": ({"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "max",
                          "operator": "gte", "value": 1e300}, {"huge"}),
        "sum between": ({"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
                         "operator": "between", "value": [-1e308, -1e299]}, {"tiny"}),
        "eq 0.1": (where("eq", 0.1), {"tenth"}),
        "eq 2**62 as int": (where("eq", 2**62), {"pow62"}),
        "gt 1e-7": (where("gt", 1e-7), {"huge", "tenth", "pow62"}),
        "in -0.0 / 1e-7": (where("in", [-0.0, 1e-7]), {"small"}),
        "lt -9.5e299": (where("lt", -9.5e299), {"tiny"}),
    }
    reference = ReferenceEvaluator(events, [], tenant_id=TENANT, as_of=SEED_AS_OF)
    for name, (definition, expected) in definitions.items():
        assert reference.members(definition) == expected, name
        assert checker.problem(Case(world, definition, {})) is None, name
