"""The membership index itself: swaps, restarts, read-only replicas, many segments."""
from __future__ import annotations

import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.membership.index import MembershipIndex
from engine.runtime import Runtime
from engine.segments.store import SegmentStore
from engine.settings import Settings
from tests.membership_fixtures import add_events, compute, create_segment, frequency, record_computation

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
def tenant(tenants):
    return tenants.a.tenant_id


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def write_members(runtime, members) -> str:
    """A members file in the lake's store (what a computation writes); returns its key."""
    key = f"test/{uuid.uuid4().hex}/members.parquet"
    path = runtime.lake.store.new_scratch_path(".parquet")
    pq.write_table(pa.table({"user_id": pa.array(sorted(members), pa.string())}), path)
    runtime.lake.store.put_file(key, path, move=True)
    return key


def test_readers_never_see_a_segment_missing_during_swaps(runtime, tenant):
    """'stable' is in every member set swapped in; the other 10,000 members change each time."""
    segment = create_segment(runtime, tenant, frequency("buy"))
    index = runtime.membership
    keys = [write_members(runtime, ["stable", *(f"r{round_}-{i}" for i in range(10_000))]) for round_ in range(6)]
    index.materialize(tenant, segment, 1, keys[0])
    stop, misses, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            ids, _ = index.lookup(tenant, "stable")
            if segment not in ids:
                misses.append(ids)
            reads[0] += 1

    threads = [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        for computation, key in enumerate(keys[1:], start=2):
            assert index.materialize(tenant, segment, computation, key)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert reads[0] > 0 and misses == []
    assert index.lookup(tenant, "r5-9999")[0] == (segment,) and index.lookup(tenant, "r4-0")[0] == ()


def test_a_computation_is_swapped_in_by_the_compute_hook(runtime, tenant):
    add_events(runtime, tenant, [("u1", "buy", {})])
    segment = create_segment(runtime, tenant, frequency("buy"))
    compute(runtime, tenant, segment)
    index = runtime.membership
    add_events(runtime, tenant, [("u2", "buy", {})])
    computation = compute(runtime, tenant, segment)
    assert index.computation_of(tenant, segment) == computation
    assert index.lookup(tenant, "u2") == ((segment,), True)


def test_restart_reloads_from_the_lake(runtime, tenant, data_dir):
    add_events(runtime, tenant, [("u1", "buy", {}), ("u2", "view", {})])
    buy, view = create_segment(runtime, tenant, frequency("buy")), create_segment(runtime, tenant, frequency("view"))
    compute(runtime, tenant, buy)
    compute(runtime, tenant, view)
    before = {u: runtime.membership.lookup(tenant, u) for u in ("u1", "u2", "u3")}
    assert before["u1"] == ((buy,), True) and before["u2"] == ((view,), True)

    restarted = Runtime(Settings(data_dir=data_dir, run_workers=False))
    try:
        assert {u: restarted.membership.lookup(tenant, u) for u in ("u1", "u2", "u3")} == before
    finally:
        restarted.stop()


def test_read_only_process_serves_and_follows_the_writer(runtime, tenant, data_dir):
    add_events(runtime, tenant, [("u1", "buy", {}), ("u2", "view", {})])
    buy, view = create_segment(runtime, tenant, frequency("buy")), create_segment(runtime, tenant, frequency("view"))
    compute(runtime, tenant, buy)

    replica = Runtime(Settings(data_dir=data_dir, run_workers=False, read_only=True))
    try:
        index = replica.membership
        assert index.lookup(tenant, "u1") == ((buy,), False)  # 'view' not computed yet
        [answer] = index.memberships(tenant, ["u2"])  # evaluated on demand in the replica
        assert (answer.segment_ids, answer.cached) == ([view], False)

        compute(runtime, tenant, view)  # by the writer process; the replica learns it from SQLite
        [answer] = index.memberships(tenant, ["u2"])
        assert (answer.segment_ids, answer.cached) == ([view], True)

        add_events(runtime, tenant, [("u3", "buy", {})])
        compute(runtime, tenant, buy)  # a recompute: the replica's catch-up thread swaps it in
        wait_for(lambda: index.lookup(tenant, "u3") == ((buy,), True))

        SegmentStore(runtime.meta).delete(tenant, buy)
        assert index.lookup(tenant, "u1") == ((), True)
        assert replica.lake.read_only
    finally:
        replica.stop()


def test_on_demand_evaluation_is_not_cached(runtime, tenant):
    add_events(runtime, tenant, [("u1", "buy", {})])
    segment = create_segment(runtime, tenant, frequency("buy"))
    index = runtime.membership
    [first] = index.memberships(tenant, ["u1"])
    assert (first.segment_ids, first.cached) == ([segment], False)
    add_events(runtime, tenant, [("u2", "buy", {})])
    [second] = index.memberships(tenant, ["u2"])  # evaluated now, against the new events
    assert (second.segment_ids, second.cached) == ([segment], False)


def test_an_older_computation_never_replaces_a_newer_one(runtime, tenant):
    add_events(runtime, tenant, [("u1", "buy", {})])
    segment = create_segment(runtime, tenant, frequency("buy"))
    first = compute(runtime, tenant, segment)
    add_events(runtime, tenant, [("u2", "buy", {})])
    second = compute(runtime, tenant, segment)
    index = runtime.membership
    assert index.materialize_computation(tenant, segment, first) is False
    assert index.computation_of(tenant, segment) == second
    assert index.lookup(tenant, "u2") == ((segment,), True)


# -- many segments (several 64-slot words), against a dict-of-sets reference ----------------
USERS = [f"user-{i}" for i in range(40)]
operation = st.one_of(
    st.tuples(st.just("compute"), st.integers(0, 69), st.sets(st.sampled_from(USERS), max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 69), st.just(frozenset())),
)


@pytest.fixture(scope="module")
def shared_runtime(tmp_path_factory):
    rt = Runtime(Settings(data_dir=tmp_path_factory.mktemp("index-prop"), run_workers=False))
    yield rt
    rt.stop()


def check(index: MembershipIndex, tenant: int, reference: dict[int, set[str]], live: set[int], users) -> None:
    for user in users:
        expected = tuple(sorted(s for s, members in reference.items() if s in live and user in members))
        assert index.lookup(tenant, user) == (expected, True), user


@settings(max_examples=20)
@given(operations=st.lists(operation, min_size=1, max_size=90))
def test_index_agrees_with_a_reference_of_sets(shared_runtime, operations):
    """Random computations and deletions over 70 segments: after every step the index (swapped
    segment by segment) equals the reference, and so does a full rebuild (restart) at the end."""
    runtime = shared_runtime
    tenant = runtime.accounts.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    index = runtime.membership
    store = SegmentStore(runtime.meta)
    segment_ids: dict[int, int] = {}
    reference: dict[int, set[str]] = {}
    for kind, k, members in operations:
        if kind == "compute":
            if k not in segment_ids:
                segment_ids[k] = create_segment(runtime, tenant, frequency("buy"))
            computation = record_computation(runtime, tenant, segment_ids[k], members)
            index.materialize_computation(tenant, segment_ids[k], computation)  # what the hook does
            assert index.computation_of(tenant, segment_ids[k]) == computation  # (or the catch-up thread did)
            reference[segment_ids[k]] = set(members)
        elif k in segment_ids:
            store.delete(tenant, segment_ids.pop(k))
        check(index, tenant, reference, set(segment_ids.values()), USERS[::7])
    check(index, tenant, reference, set(segment_ids.values()), USERS)
    restarted = MembershipIndex(runtime.meta, runtime.computations)
    restarted.load()
    check(restarted, tenant, reference, set(segment_ids.values()), USERS)
    restarted.close()
