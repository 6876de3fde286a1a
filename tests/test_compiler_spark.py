"""The Spark rendering of compiled segments gives the reference result on Spark itself.

PySpark local mode reads the same Parquet files the DuckDB tests write, as temp
views named like the schema's relations; ``to_sql(query, "spark")`` must select
exactly the reference members for the seed example, one definition per
condition type and a handful of random definitions.
"""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from compiler import compile_segment, parse_definition, to_sql
from tests.compiler_cases import (
    DROP, EXAMPLE_DEFINITIONS, EXAMPLE_SEGMENTS, HOSTILE_CATALOG, SEED_AS_OF, SEED_DEFINITION, SEED_MEMBERS, seed_world,
)
from tests.compiler_fixtures import table_lake
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import DefinitionMaker, World, random_world
from tests.spark_fixtures import spark  # noqa: F401  (the session-wide local[2] session of build_session)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]
pyspark_sql = pytest.importorskip("pyspark.sql")


class SparkLake:
    """A world as Parquet files behind the temp views ``events`` and ``profiles``."""

    def __init__(self, spark, world: World, directory):
        import pyarrow.parquet as pq

        self.spark, self.world = spark, world
        self.schema, tables = table_lake(world)
        directory.mkdir(parents=True, exist_ok=True)
        for name, table in tables.items():
            pq.write_table(table, directory / f"{name}.parquet")
            spark.read.parquet(str(directory / f"{name}.parquet")).createOrReplaceTempView(name)

    def members(self, definition: dict, segments: dict) -> list[str]:
        query = compile_segment(parse_definition(definition), self.schema, tenant_id=self.world.tenant_id,
                                as_of=self.world.as_of, resolve_segment=segments.__getitem__)
        return [row[0] for row in self.spark.sql(to_sql(query, "spark")).collect()]

    def expected(self, definition: dict, segments: dict) -> set[str]:
        world = self.world
        return ReferenceEvaluator(world.events, world.profiles, tenant_id=world.tenant_id, as_of=world.as_of,
                                  segments=segments).members(definition)


def _assert_same(lake: SparkLake, definition: dict, segments: dict) -> None:
    got = lake.members(definition, segments)
    expected = lake.expected(definition, segments)
    assert set(got) == expected, f"definition={definition!r}\nexpected={sorted(expected)}\ngot={sorted(got)}"
    assert len(got) == len(set(got)), f"duplicate user_ids for {definition!r}: {sorted(got)}"


@pytest.fixture(scope="module")
def seed_lake(spark, tmp_path_factory):
    return SparkLake(spark, seed_world(), tmp_path_factory.mktemp("spark-seed"))


def test_seed_example_on_spark(seed_lake):
    assert set(seed_lake.members(SEED_DEFINITION, {})) == SEED_MEMBERS


@pytest.mark.parametrize("name", sorted(EXAMPLE_DEFINITIONS))
def test_each_condition_type_on_spark(seed_lake, name):
    _assert_same(seed_lake, EXAMPLE_DEFINITIONS[name], EXAMPLE_SEGMENTS)


def test_random_definitions_on_spark(spark, tmp_path_factory):
    rng = random.Random(20260415)
    world = random_world(rng, max_events=120)
    lake = SparkLake(spark, world, tmp_path_factory.mktemp("spark-random"))
    segments = {101: DefinitionMaker(rng, world).definition(depth=2)}
    maker = DefinitionMaker(rng, world, tuple(segments))
    for _ in range(6):
        _assert_same(lake, maker.definition(), segments)


HOSTILE_PLANS = {"u'1": "\\", 'u"2': "\\'x", "u;3--": "'", "ü4": "a%b", "u 5": "a_b", "u\\6": DROP,
                 "u%7": "plain", "u_8": "x" * 1000}


@pytest.mark.parametrize("operator, value, expected", [
    ("contains", "\\", {"u'1", 'u"2'}),
    ("starts_with", "\\'", {'u"2'}),
    ("eq", "'", {"u;3--"}),
    ("contains", "%", {"ü4"}),
    ("starts_with", "a_", {"u 5"}),
    ("contains", "x" * 999, {"u_8"}),
    ("not_in", ["a_b", DROP], set(HOSTILE_PLANS) - {"u 5", "u\\6"}),
])
def test_hostile_values_on_spark(hostile_lake, operator, value, expected):
    """Spark string literals treat backslashes as escapes: quotes, backslashes and wildcards must survive."""
    definition = {"type": "frequency", "event_type": "order'placed", "operator": "gte", "value": 1,
                  "where": [{"property": '"plan"', "operator": operator, "value": value}]}
    assert hostile_lake.expected(definition, {}) == expected
    _assert_same(hostile_lake, definition, {})


@pytest.fixture(scope="module")
def hostile_lake(spark, tmp_path_factory):
    events = [{"tenant_id": 1, "user_id": user, "event_type": "order'placed",
               "occurred_at": SEED_AS_OF - timedelta(days=1),
               "properties": {'"plan"': plan}} for user, plan in HOSTILE_PLANS.items()]
    world = World(as_of=SEED_AS_OF, events=events, profiles=[], catalog=HOSTILE_CATALOG)
    return SparkLake(spark, world, tmp_path_factory.mktemp("spark-hostile"))
