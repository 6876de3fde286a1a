"""Hostile names and values: quotes, semicolons, comments, SQL keywords, LIKE wildcards,
backslashes, unicode and very long strings must reach the database as data, never as SQL.

Three angles: (1) differential runs in DuckDB with hostile property/trait names,
event types, user ids and values (results == reference), (2) typed columns whose
physical names are themselves hostile, (3) the rendered SQL of every dialect
parses back to ONE query whose string literals are exactly the hostile values,
and a ``DROP TABLE`` value leaves a sentinel table alone.
"""
from __future__ import annotations

import random
from datetime import datetime

import duckdb
import pytest
import sqlglot
from hypothesis import Phase, given, settings
from sqlglot import exp

from compiler import DIALECTS, DefinitionError, compile_segment, parse_definition, to_sql
from tests.compiler_cases import DROP, HOSTILE_CATALOG, HOSTILE_COLUMNS, HOSTILE_STRINGS
from tests.compiler_fixtures import Case, DuckDBChecker, check_all, write_lake
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import DefinitionMaker, random_world, scenarios

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]


def _sentinel_connection():
    con = duckdb.connect()
    con.execute("CREATE TABLE sentinel AS SELECT 42 AS answer")
    con.execute("CREATE TABLE x AS SELECT 1 AS one")
    return con


def _assert_sentinel_intact(con):
    assert con.execute("SELECT answer FROM sentinel").fetchall() == [(42,)]
    assert con.execute("SELECT one FROM x").fetchall() == [(1,)]


@pytest.fixture(scope="module")
def hostile_con():
    con = _sentinel_connection()
    yield con
    _assert_sentinel_intact(con)
    con.close()


@settings(phases=NO_SHRINK, max_examples=max(10, settings().max_examples // 2))
@given(scenarios(catalog=HOSTILE_CATALOG, max_events=80, max_definitions=10))
def test_hostile_names_and_values_match_reference(hostile_con, tmp_path_factory, scenario):
    checker = DuckDBChecker(hostile_con, tmp_path_factory.mktemp("hostile"))
    check_all(checker, scenario.world, scenario.definitions, scenario.segments)
    _assert_sentinel_intact(hostile_con)


@pytest.mark.parametrize("seed", range(6))
def test_hostile_physical_column_names(hostile_con, tmp_path, seed):
    """Typed columns named like 'a"b; --c' are quoted identifiers, not SQL."""
    rng = random.Random(seed)
    world = random_world(rng, HOSTILE_CATALOG, max_events=80)
    names = sorted(HOSTILE_CATALOG.properties) + sorted(HOSTILE_CATALOG.traits)
    physical = dict(zip(names, rng.sample(HOSTILE_COLUMNS * 2, len(names))))
    # two traits may not share a physical column, two properties neither
    properties = {n: f"{physical[n]}{i}" for i, n in enumerate(sorted(HOSTILE_CATALOG.properties))}
    traits = {n: f"{physical[n]}{i}" for i, n in enumerate(sorted(HOSTILE_CATALOG.traits))}
    properties[sorted(properties)[0]] = 'a"b; --c'  # the exact name from the brief, unsuffixed
    checker = DuckDBChecker(hostile_con, tmp_path, columns=(properties, traits))
    maker = DefinitionMaker(rng, world)
    check_all(checker, world, [maker.definition() for _ in range(25)], {})
    _assert_sentinel_intact(hostile_con)


# -- the SQL text: one statement, hostile values only inside literals ------------------------
AS_OF = datetime(2026, 3, 15, 12, 30)


def _hostile_definitions() -> list[dict]:
    """Every hostile string in every place a string can go."""
    props, traits = HOSTILE_CATALOG.properties, HOSTILE_CATALOG.traits
    string_prop = next(n for n, k in props.items() if k == "string")
    string_trait = next(n for n, k in traits.items() if k == "string")
    definitions = []
    for value in HOSTILE_STRINGS:
        where = [{"property": string_prop, "operator": op, "value": value} for op in ("eq", "contains", "starts_with")]
        where.append({"property": string_prop, "operator": "not_in", "value": list(dict.fromkeys([value, "'"]))})
        definitions.append({"logic": "OR", "conditions": [
            {"type": "frequency", "event_type": value or "e", "operator": "gte", "value": 1, "where": where},
            {"type": "trait", "trait": string_trait, "operator": "between", "value": sorted([value, "m"])},
            {"type": "sequence", "within_days": 3, "steps": [
                {"event_type": value or "e", "where": where[:1]}, {"event_type": HOSTILE_CATALOG.event_types[1]}]},
        ]})
    return definitions


def _string_literals(tree: exp.Expression) -> set[str]:
    return {node.this for node in tree.find_all(exp.Literal) if node.is_string}


SQL_PROPERTY_COLUMNS = dict(zip(sorted(HOSTILE_CATALOG.properties), HOSTILE_COLUMNS))
SQL_TRAIT_COLUMNS = dict(zip(sorted(HOSTILE_CATALOG.traits), HOSTILE_COLUMNS))
STRING_PROPERTY_COLUMN = SQL_PROPERTY_COLUMNS[next(n for n, k in HOSTILE_CATALOG.properties.items() if k == "string")]
STRING_TRAIT_COLUMN = SQL_TRAIT_COLUMNS[next(n for n, k in HOSTILE_CATALOG.traits.items() if k == "string")]


@pytest.fixture(scope="module")
def hostile_schema(tmp_path_factory):
    world = random_world(random.Random(0), HOSTILE_CATALOG, max_events=5)
    return write_lake(world, tmp_path_factory.mktemp("hostile-sql"), SQL_PROPERTY_COLUMNS, SQL_TRAIT_COLUMNS)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_hostile_values_stay_literals_in_every_dialect(hostile_schema, dialect):
    for definition in _hostile_definitions():
        query = compile_segment(parse_definition(definition), hostile_schema, tenant_id=1, as_of=AS_OF)
        sql = to_sql(query, dialect)
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
        assert len(statements) == 1, sql
        tree = statements[0]
        assert isinstance(tree, exp.Query), sql
        assert not list(tree.find_all(exp.Drop, exp.Command, exp.Insert, exp.Delete, exp.Update, exp.Create)), sql
        values = {f["value"] for f in definition["conditions"][0]["where"] if f["operator"] == "eq"}
        assert values <= _string_literals(tree), (dialect, values)
        identifiers = {node.name for node in tree.find_all(exp.Identifier)}
        columns = {STRING_PROPERTY_COLUMN, STRING_TRAIT_COLUMN}
        if dialect == "bigquery":  # reads a dot inside backticks as a path; its columns cannot have dots anyway
            columns = {part for column in columns for part in column.split(".")}
        assert columns <= identifiers, (dialect, identifiers)


def test_hostile_string_tenant_is_a_literal(hostile_schema):
    tenant = "1' OR '1'='1"
    query = compile_segment(parse_definition({"type": "first_seen", "operator": "gt", "window_days": 1}),
                            hostile_schema, tenant_id=tenant, as_of=AS_OF)
    for dialect in DIALECTS:
        tree = sqlglot.parse_one(to_sql(query, dialect), read=dialect)
        assert tenant in _string_literals(tree)
        assert next(tree.find_all(exp.Or), None) is None, dialect  # the query has no OR of its own


def test_drop_table_values_do_not_execute(hostile_schema):
    con = _sentinel_connection()
    try:
        for definition in _hostile_definitions():
            query = compile_segment(parse_definition(definition), hostile_schema, tenant_id=1, as_of=AS_OF)
            con.execute(to_sql(query, "duckdb")).fetchall()
        _assert_sentinel_intact(con)
    finally:
        con.close()


@pytest.mark.parametrize("bad, path", [
    ({"type": "trait", "trait": "country'--", "operator": "eq", "value": "a\x00b"}, "definition.value"),
    ({"type": "trait", "trait": "line\nbreak", "operator": "is_set"}, "definition.trait"),
    ({"type": "trait", "trait": "n" * 129, "operator": "is_set"}, "definition.trait"),
    ({"type": "trait", "trait": "country'--", "operator": "eq", "value": "x" * 1001}, "definition.value"),
    ({"type": "frequency", "event_type": "e", "operator": "eq", "value": 1,
      "where": [{"property": "\u202e", "operator": "is_set"}]}, "definition.where[0].property"),
])
def test_unrepresentable_strings_are_rejected_with_their_path(bad, path):
    with pytest.raises(DefinitionError) as raised:
        parse_definition(bad)
    assert raised.value.errors[0].path == path


def test_hostile_name_missing_from_schema_is_reported_not_compiled(hostile_schema):
    definition = {"type": "trait", "trait": "'; DROP TABLE sentinel; --", "operator": "is_set"}
    with pytest.raises(DefinitionError) as raised:
        compile_segment(parse_definition(definition), hostile_schema, tenant_id=1, as_of=AS_OF)
    assert raised.value.errors[0].path == "definition.trait"
    assert raised.value.errors[0].code == "unknown_trait"


def test_reference_agrees_on_a_hand_checked_hostile_case(hostile_con, tmp_path):
    """A wildcard-looking value only matches itself; a DROP value is just a string."""
    plan = '"plan"'
    world = random_world(random.Random(1), HOSTILE_CATALOG, max_events=0)
    world.events = [
        {"tenant_id": 1, "user_id": user, "event_type": "order'placed", "occurred_at": AS_OF,
         "properties": {plan: value}}
        for user, value in [("u'1", "a%b"), ('u"2', "aXb"), ("u;3--", DROP), ("ü4", "a_b"), ("u 5", "a\\%b")]
    ]
    world.profiles = []
    checker = DuckDBChecker(hostile_con, tmp_path)
    cases = {
        "a%b": {"u'1"}, "a_b": {"ü4"}, DROP: {"u;3--"}, "\\%": {"u 5"},
    }
    for value, expected in cases.items():
        definition = {"type": "frequency", "event_type": "order'placed", "operator": "gte", "value": 1,
                      "where": [{"property": plan, "operator": "contains", "value": value}]}
        assert checker.problem(Case(world, definition, {})) is None
        reference = ReferenceEvaluator(world.events, [], tenant_id=1, as_of=AS_OF)
        assert reference.members(definition) == expected
