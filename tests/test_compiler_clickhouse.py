"""The ClickHouse rendering of compiled segments gives the reference answer on ClickHouse itself (chdb,
in-process), whatever the session's time zone.

Each world is loaded into Memory tables created as ``LakeSchema.table_columns("clickhouse")`` says
(``DateTime64(6, 'UTC')``), or with zone-less ``DateTime64(6)`` columns, which take the zone of the
session that creates the table (like a server configured in that zone): date arithmetic there crosses
daylight saving changes (America/New_York, 2026-03-08), so a day must be 86,400 seconds, and every
literal must name its zone. The seed example, one definition per condition type and the random
scenarios of the differential test must select the reference members in UTC and in America/New_York.
"""
from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest
from chdb import session as chdb_session
from hypothesis import Phase, given, settings

from compiler import LakeSchema
from tests.compiler_cases import EXAMPLE_DEFINITIONS, EXAMPLE_SEGMENTS, SEED_DEFINITION, seed_world
from tests.compiler_fixtures import Case, Checker, check_all, create_table_sql, table_lake
from tests.segment_strategies import World, scenarios

ZONE_LESS = "DateTime64(6)"
# (session time zone, timestamp column type; None: as table_columns says)
SESSIONS = {"utc": ("UTC", None), "new_york": ("America/New_York", None),
            "new_york_zone_less": ("America/New_York", ZONE_LESS)}


class ClickHouseChecker(Checker):
    dialect = "clickhouse"

    def __init__(self, session, root, timestamp: str | None):
        self.session, self.root, self.timestamp = session, root, timestamp
        self.loaded: tuple[World, LakeSchema] | None = None
        self._dirs = itertools.count()

    def _columns(self, schema: LakeSchema) -> dict[str, dict[str, str]]:
        columns = schema.table_columns("clickhouse")
        if self.timestamp is None:
            return columns
        return {name: {c: t.replace("DateTime64(6, 'UTC')", self.timestamp) for c, t in typed.items()}
                for name, typed in columns.items()}

    def load(self, world: World) -> LakeSchema:
        if self.loaded is not None and self.loaded[0] is world:  # check_all asks again for each definition
            return self.loaded[1]
        schema, tables = table_lake(world)
        columns = self._columns(schema)
        directory = self.root / str(next(self._dirs))
        directory.mkdir()
        for name, table in tables.items():
            path = directory / f"{name}.parquet"
            pq.write_table(table, path)
            self.session.query(f"DROP TABLE IF EXISTS {name}")
            self.session.query(create_table_sql(name, columns[name], "clickhouse", " ENGINE = Memory"))
            self.session.query(f"INSERT INTO {name} SELECT * FROM file('{path}', Parquet)")
        self.loaded = (world, schema)
        return schema

    def run(self, sql: str) -> list[str]:
        return [row[0] for row in json.loads(self.session.query(sql, "JSONCompact").bytes())["data"]]


@pytest.fixture(scope="module")
def session():
    session = chdb_session.Session()
    yield session
    session.close()


@pytest.fixture(scope="module")
def checkers(session, tmp_path_factory):
    """One checker per session setup, each in its own database (its tables hold one world at a time)."""
    checkers = {}
    for name, (zone, timestamp) in SESSIONS.items():
        session.query(f"CREATE DATABASE IF NOT EXISTS {name}")
        checkers[name] = ClickHouseChecker(_Session(session, name, zone), tmp_path_factory.mktemp(name), timestamp)
    return checkers


class _Session:
    """The shared chdb session as if it were its own: every query in ``zone`` and ``database``."""

    def __init__(self, session, database: str, zone: str):
        self.session, self.prefix = session, f"SET session_timezone = '{zone}'; USE {database}; "

    def query(self, sql: str, output: str = "CSV"):
        return self.session.query(self.prefix + sql, output)


@pytest.fixture(scope="module", params=sorted(SESSIONS))
def checker(checkers, request):
    return checkers[request.param]


def test_zone_less_columns_are_read_in_the_session_zone(checkers):
    """Otherwise the tests below would not show a dependence on the session."""
    checker = checkers["new_york_zone_less"]
    checker.load(seed_world())
    shifted = checker.session.query(
        "SELECT toString(occurred_at + INTERVAL 20 DAY, 'UTC') FROM events "
        "WHERE occurred_at = CAST('2026-02-24 12:00:00' AS DateTime64(6, 'UTC'))", "CSV").bytes().decode()
    assert shifted.strip() == '"2026-03-16 11:00:00.000000"'  # 20 calendar days in New York: 1 hour short


def test_seed_example_on_clickhouse(checker):
    assert checker.problem(Case(seed_world(), SEED_DEFINITION, {})) is None


@pytest.mark.parametrize("name", sorted(EXAMPLE_DEFINITIONS))
def test_each_condition_type_on_clickhouse(checker, name):
    assert checker.problem(Case(seed_world(), EXAMPLE_DEFINITIONS[name], EXAMPLE_SEGMENTS)) is None


# ClickHouse inlines every reference to a CTE: planning a sequence's CTEs takes a good part of a second
# on a busy machine, so a fifth of the profile's examples
@pytest.mark.slow
@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate], max_examples=max(10, settings().max_examples // 5))
@given(scenarios())
def test_random_scenarios_on_clickhouse(checkers, scenario):
    check_all(checkers["new_york_zone_less"], scenario.world, scenario.definitions, scenario.segments)
