"""The dedup window (engine.ingest.SeenIds, sharded sets) against a plain model: one set
of (tenant, id) plus the list of (day, tenant, id) each day expires. Ids released after a
failed commit stay in their day's list, as documented."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ingest import SeenIds

NAMES = [f"e{i}" for i in range(40)]
ids = st.lists(st.one_of(st.none(), st.sampled_from(NAMES)), max_size=12)
operations = st.lists(st.one_of(
    st.tuples(st.just("claim"), st.integers(1, 2), ids, st.integers(0, 12)),
    st.tuples(st.just("add"), st.integers(1, 2), ids.map(lambda xs: [x for x in xs if x]), st.integers(0, 12)),
    st.tuples(st.just("release"), st.integers(1, 2)),
    st.tuples(st.just("expire"), st.integers(0, 24)),
), max_size=40)


def check(window_class, ops) -> None:
    seen, model, scheduled = window_class(window_days=3), set(), []
    last_claim: dict[int, list[str]] = {}
    for op in ops:
        if op[0] == "claim":
            _, tenant, batch, day = op
            mask, claimed = seen.claim(tenant, batch, day)
            expected_mask, expected_claimed = [], []
            for event_id in batch:
                new = event_id is None or (tenant, event_id) not in model
                expected_mask.append(new)
                if event_id is not None and new:
                    model.add((tenant, event_id))
                    scheduled.append((day, tenant, event_id))
                    expected_claimed.append(event_id)
            assert (mask or [True] * len(batch)) == expected_mask
            assert claimed == expected_claimed
            last_claim[tenant] = claimed
        elif op[0] == "add":
            _, tenant, batch, day = op
            seen.add(tenant, batch, day)
            for event_id in dict.fromkeys(batch):
                if (tenant, event_id) not in model:
                    model.add((tenant, event_id))
                    scheduled.append((day, tenant, event_id))
        elif op[0] == "release":
            tenant = op[1]
            released = last_claim.pop(tenant, [])
            seen.release(tenant, released)
            model -= {(tenant, event_id) for event_id in released}
        else:
            today = op[1]
            seen.expire(today)
            model -= {(t, i) for d, t, i in scheduled if d < today - 3}
            scheduled = [(d, t, i) for d, t, i in scheduled if d >= today - 3]
        for tenant in (1, 2):
            assert seen.contains_many(tenant, NAMES) == [(tenant, n) in model for n in NAMES]
    assert len(seen) == len(model)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_sharded_window_behaves_like_one_set(ops):
    check(SeenIds, ops)
