"""End to end against the independent reference evaluator: random worlds written through the real
lake (property typing, manifests, hive partitions), segments stored in SQLite and referenced by id,
then ``preview`` and ``evaluate_for_users`` -- the path the API takes, not just the compiler."""
from __future__ import annotations

import itertools
import uuid
from datetime import datetime

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings

from compiler import DefinitionError, parse_definition
from engine.segments import query as segment_query
from engine.runtime import Runtime
from engine.segments.store import Author, SegmentStore
from engine.settings import Settings
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import TENANT, Catalog, Scenario, scenarios

# Timestamps inside JSON properties arrive as strings (the lake does not guess dates), so the
# lake-level catalog leaves the timestamp-kind names out.
CATALOG = Catalog(
    properties={"total": "number", "qty": "number", "plan": "string", "coupon": "string", "is_gift": "boolean"},
    traits={"age": "number", "ltv": "number", "country": "string", "email": "string", "vip": "boolean"},
)
_counter = itertools.count()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return tmp_path_factory.mktemp("segments-property")


def _load(runtime: Runtime, scenario: Scenario) -> None:
    world = scenario.world
    for tenant in sorted({event["tenant_id"] for event in world.events}):
        rows = [event for event in world.events if event["tenant_id"] == tenant]
        runtime.lake.append_events(tenant, pa.table({
            "event_id": [uuid.uuid4().hex for _ in rows],
            "tenant_id": pa.array([tenant] * len(rows), pa.int64()),
            "user_id": [row["user_id"] for row in rows],
            "event_type": [row["event_type"] for row in rows],
            "occurred_at": pa.array([row["occurred_at"] for row in rows], pa.timestamp("us")),
            "received_at": pa.array([world.as_of] * len(rows), pa.timestamp("us")),
            "properties": [orjson.dumps(row["properties"]).decode() for row in rows],
        }))
    for tenant in sorted({profile["tenant_id"] for profile in world.profiles}):
        runtime.lake.upsert_profiles(tenant, [
            {"user_id": p["user_id"], "traits": p["traits"], "updated_at": datetime(2026, 1, 1)}
            for p in world.profiles if p["tenant_id"] == tenant])


def _renumber(node, ids: dict[int, int]):
    """The definition with library segment ids replaced by the ids the store assigned."""
    if isinstance(node, dict):
        if node.get("type") == "segment":
            return {**node, "segment_id": ids[node["segment_id"]]}
        return {key: _renumber(value, ids) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber(item, ids) for item in node]
    return node


@settings(max_examples=15)
@given(scenarios(CATALOG, max_events=60, max_definitions=4))
def test_preview_and_evaluate_for_users_match_the_reference(roots, scenario: Scenario):
    world = scenario.world
    runtime = Runtime(Settings(data_dir=roots / str(next(_counter)), run_workers=False))
    try:
        _load(runtime, scenario)
        store, ids = SegmentStore(runtime.meta), {}
        for library_id in sorted(scenario.segments):  # each refers only to earlier ones
            definition = _renumber(scenario.segments[library_id], ids)
            ids[library_id] = store.create(TENANT, name=str(library_id), segment_type="rule", description="",
                                           definition=parse_definition(definition),
                                           author=Author(None, None))["id"]
        reference = ReferenceEvaluator(world.events, world.profiles, tenant_id=TENANT, as_of=world.as_of,
                                       segments=scenario.segments)
        candidates = set(CATALOG.user_ids) | {"not-a-user"}
        for definition in scenario.definitions:
            stored = _renumber(definition, ids)
            try:
                compiled = runtime.queries.compile(TENANT, stored, as_of=world.as_of)
            except DefinitionError as err:
                # a name no event/profile ever set a value for has no column: nothing to compare
                assert {e.code for e in err.errors} <= segment_query.DATA_DEPENDENT_ERRORS, err
                continue
            expected = reference.members(definition)
            preview = runtime.queries.run_preview(compiled, limit=segment_query.MAX_PREVIEW_LIMIT)
            assert (preview.matched_users, preview.sample_user_ids) == (len(expected), sorted(expected)), \
                (definition, world)
            got = runtime.queries.evaluate_for_users(TENANT, stored, candidates, as_of=world.as_of)
            assert got == expected & candidates, (definition, world)
    finally:
        runtime.stop()
        runtime.meta.close()
