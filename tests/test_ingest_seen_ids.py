"""The dedup window (engine.ingest.seen_ids.SeenIds, generations of sets) against a plain model:
one set of (tenant, id) plus the list of (day, tenant, id) each day expires. Generations
of 3 ids make every operation cross generation boundaries."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ingest.seen_ids import SeenIds

NAMES = [f"e{i}" for i in range(40)]
ids = st.lists(st.one_of(st.none(), st.sampled_from(NAMES)), max_size=12)
operations = st.lists(st.one_of(
    st.tuples(st.just("claim"), st.integers(1, 2), ids, st.integers(0, 12)),
    st.tuples(st.just("add"), st.integers(1, 2), ids.map(lambda xs: [x for x in xs if x]), st.integers(0, 12)),
    st.tuples(st.just("release"), st.integers(1, 2)),
    st.tuples(st.just("expire"), st.integers(0, 24)),
), max_size=40)


def check(seen: SeenIds, ops) -> None:
    model, scheduled = set(), []
    last_claim: dict[int, tuple[list[str], int]] = {}
    for op in ops:
        if op[0] in ("add", "expire"):  # a failed commit releases at once, before the flusher acts
            last_claim.clear()
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
            last_claim[tenant] = (claimed, day)
        elif op[0] == "add":
            _, tenant, batch, day = op
            seen.add(tenant, batch, day)
            for event_id in dict.fromkeys(batch):
                if (tenant, event_id) not in model:
                    model.add((tenant, event_id))
                    scheduled.append((day, tenant, event_id))
        elif op[0] == "release":
            tenant = op[1]
            released, day = last_claim.pop(tenant, ([], 0))
            seen.release(tenant, released, day)
            model -= {(tenant, event_id) for event_id in released}
            scheduled = [(d, t, i) for d, t, i in scheduled if not (t == tenant and i in released)]
        else:
            today = op[1]
            seen.expire(today)
            model -= {(t, i) for d, t, i in scheduled if d < today - 3}
            scheduled = [(d, t, i) for d, t, i in scheduled if d >= today - 3]
        for tenant in (1, 2):
            assert seen.contains_many(tenant, NAMES) == [(tenant, n) in model for n in NAMES]
    assert len(seen) == len(model)


@pytest.mark.parametrize("generation_size", [3, 600_000])
@settings(max_examples=300, deadline=None)
@given(ops=operations)
def test_window_behaves_like_one_set(generation_size, ops):
    check(SeenIds(window_days=3, generation_size=generation_size), ops)


def test_generations_stay_bounded_and_expire_whole():
    seen = SeenIds(window_days=2, generation_size=1000)
    for day in range(10, 14):
        for n in range(5):
            assert seen.claim(1, [f"d{day}-{n}-{i}" for i in range(500)], day)[0] is None
    gens = seen._generations[1]
    assert len(gens) == 10 and all(len(g.ids) == 1000 for g in gens)
    assert seen.claim(1, ["d10-0-0", "d13-4-499", "new"], 13) == ([False, False, True], ["new"])
    seen.expire(14)  # days 10 and 11 leave; their generations go whole
    assert len(seen) == 2 * 2500 + 1
    assert seen.contains_many(1, ["d10-0-0", "d11-4-499", "d12-0-0", "d13-4-499", "new"]) == [
        False, False, True, True, True]
