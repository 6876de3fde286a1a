"""The engine's query path on every backend against the reference evaluator: worlds written through
the real lake, segments stored in SQLite and referenced by id, then a preview and the member table
(what a computation stores) on the backend the settings pick."""
from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given, settings

from compiler import DefinitionError, parse_definition
from engine.segments import query as segment_query
from engine.runtime import Runtime
from engine.segments.store import Author, SegmentStore
from engine.settings import Settings
from tests.compiler_cases import (
    EXAMPLE_DEFINITIONS, EXAMPLE_SEGMENTS, SEED_AS_OF, SEED_DEFINITION, SEED_MEMBERS, seed_world,
)
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import TENANT, Scenario, scenarios
from tests.test_segments_property import CATALOG, _load, _renumber

pytest_plugins = ["tests.backend_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
EXAMPLES = {"duckdb": 25, "spark": 6}  # hypothesis examples per backend (derandomized: the same ones each run)
_counter = itertools.count()


@pytest.fixture
def open_runtime(backend_name, tmp_path_factory, request):
    """Runtimes whose previews and computations both run on ``backend_name``."""
    if backend_name == "spark":
        request.getfixturevalue("spark")  # the session-wide test session, before the registry asks for one
    runtimes = []

    def make() -> Runtime:
        runtime = Runtime(Settings(data_dir=tmp_path_factory.mktemp("e2e") / str(next(_counter)), run_workers=False,
                                   preview_backend=backend_name, query_backend=backend_name,
                                   spark_master="local[2]"))
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.stop()
        runtime.meta.close()


def _check(runtime: Runtime, scenario: Scenario) -> int:
    """Every definition of ``scenario``: preview and member table equal the reference's members.
    Returns how many were compared (a definition naming what the world lacks is skipped)."""
    world = scenario.world
    _load(runtime, scenario)
    store, ids = SegmentStore(runtime.meta), {}
    for library_id in sorted(scenario.segments):  # each refers only to earlier ones
        ids[library_id] = store.create(TENANT, name=str(library_id), segment_type="rule", description="",
                                       definition=parse_definition(_renumber(scenario.segments[library_id], ids)),
                                       author=Author(None, None))["id"]
    reference = ReferenceEvaluator(world.events, world.profiles, tenant_id=TENANT, as_of=world.as_of,
                                   segments=scenario.segments)
    compared = 0
    for definition in scenario.definitions:
        try:
            compiled = runtime.queries.compile(TENANT, _renumber(definition, ids), as_of=world.as_of)
        except DefinitionError as err:  # a name no event or profile set has no column: nothing to compare
            assert {e.code for e in err.errors} <= segment_query.DATA_DEPENDENT_ERRORS, err
            continue
        expected = sorted(reference.members(definition))
        preview = runtime.queries.run_preview(compiled, limit=segment_query.MAX_PREVIEW_LIMIT)
        assert (preview.matched_users, preview.sample_user_ids) == (len(expected), expected), (definition, world)
        members = runtime.queries.member_table(compiled, runtime.backends.batch)
        assert members.column("user_id").to_pylist() == expected, (definition, world)
        compared += 1
    return compared


def test_the_seed_example(open_runtime, backend_name):
    runtime = open_runtime()
    assert runtime.backends.batch.name == runtime.backends.interactive.name == backend_name
    _check(runtime, Scenario(seed_world(), [SEED_DEFINITION], {}))
    compiled = runtime.queries.compile(TENANT, SEED_DEFINITION, as_of=SEED_AS_OF)
    members = runtime.queries.member_table(compiled, runtime.backends.batch)
    assert members.column("user_id").to_pylist() == sorted(SEED_MEMBERS)  # the answer written next to each user


def test_one_definition_per_condition_type(open_runtime, backend_name):
    """Every condition type and filter operator (a segment reference among them) on the seed world."""
    world = seed_world()
    at = world.as_of - timedelta(days=3)
    world.events.extend([  # the filters' property names, so that every definition compiles and is compared
        {"tenant_id": TENANT, "user_id": "churner", "event_type": "order_placed", "occurred_at": at, "properties": {
            "coupon": "xa%y", "plan": "a_b", "is_gift": False, "paid_at": "2026-03-15T00:00:00Z", "total": 5}},
        {"tenant_id": TENANT, "user_id": "loyal", "event_type": "order_placed", "occurred_at": at, "properties": {
            "coupon": "none", "plan": "c", "is_gift": True, "paid_at": "2026-04-15T00:00:00Z", "total": 7}}])
    world.profiles.extend([
        {"tenant_id": TENANT, "user_id": "churner", "traits": {"age": 25, "vip": True, "email": "c@example.com",
                                                              "signed_up_at": "2026-03-01T00:00:00Z"}},
        {"tenant_id": TENANT, "user_id": "loyal", "traits": {"age": 40, "vip": False, "country": "a",
                                                            "signed_up_at": "2026-04-10T00:00:00Z"}}])
    definitions = list(EXAMPLE_DEFINITIONS.values())
    assert _check(open_runtime(), Scenario(world, definitions, EXAMPLE_SEGMENTS)) == len(definitions)


def test_random_definitions_with_segment_references(open_runtime, backend_name):
    @settings(max_examples=EXAMPLES[backend_name], derandomize=True)
    @given(scenarios(CATALOG, max_events=40, max_definitions=3))
    def check(scenario: Scenario) -> None:
        _check(open_runtime(), scenario)

    check()
