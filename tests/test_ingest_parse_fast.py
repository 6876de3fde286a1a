"""The msgspec fast path of ``parse_track`` against the reference validator: whenever
the fast path accepts a body, the reference accepts it too and yields the same
columns; whatever the fast path declines, ``parse_track`` answers as the reference."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ingest.parse import (
    MAX_ID_CHARS,
    EventColumns,
    IngestError,
    _parse_track_batch,
    parse_track,
    parse_track_checked,
)

RECEIVED = 1_764_000_000_123_456

# Each field is usually valid (so whole batches often are, and take the fast path) and
# sometimes anything else.
valid_ids = st.text(min_size=1, max_size=12) | st.text(min_size=MAX_ID_CHARS, max_size=MAX_ID_CHARS)
other_ids = st.just("") | st.text(min_size=MAX_ID_CHARS + 1, max_size=MAX_ID_CHARS + 1) | st.integers() | st.none()
valid_timestamps = st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T10:00:00.123456+02:00",
                                    "2026-11-20 10:00:00-0530", "20261120T100000Z", "2026-11-20T10:00:00.5-00:00"])
other_timestamps = st.none() | st.integers() | st.text(max_size=8) | st.sampled_from([
    "2026-11-20T10:00:00", "2026-11-20", "not a time", "2026-02-30T00:00:00Z", "2026-11-20T10:00:00.1234567Z",
    "2026-11-20T24:00:00Z"])
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)
valid_properties = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
other_properties = st.none() | json_values


@st.composite
def items(draw):
    item = {}
    for name, valid, other in (("user_id", valid_ids, other_ids), ("event_type", valid_ids, other_ids),
                               ("event_id", valid_ids, other_ids), ("occurred_at", valid_timestamps, other_timestamps),
                               ("properties", valid_properties, other_properties)):
        if draw(st.integers(0, 9)) > (0 if name in ("user_id", "event_type") else 3):
            item[name] = draw(valid if draw(st.integers(0, 19)) else other)
    if draw(st.integers(0, 30)) == 0:
        item[draw(st.sampled_from(["event", "type", "userId"]))] = "x"
    return item


def outcome(parse, body: bytes):
    try:
        return parse(body, RECEIVED)
    except IngestError as err:
        return ("rejected", type(err), err.code, err.fields)


@settings(max_examples=400, deadline=None)
@given(st.lists(items(), min_size=0, max_size=5), st.booleans())
def test_fast_path_agrees_with_the_reference_validator(batch, unicode_escapes):
    # non-ASCII escaped (\\uXXXX) or sent as UTF-8, as clients do either
    body = json.dumps({"batch": batch}, ensure_ascii=unicode_escapes, separators=(",", ":")).encode()
    reference = outcome(parse_track_checked, body)
    try:
        fast = _parse_track_batch(body, RECEIVED)
    except Exception:
        fast = None
    if fast is not None:
        assert isinstance(reference, EventColumns), f"fast path accepted what the reference rejects: {reference}"
        assert fast == reference
    assert outcome(parse_track, body) == reference


def test_a_plain_valid_batch_takes_the_fast_path():
    batch = [{"event_id": f"e{i}", "user_id": f"u{i}", "event_type": "order_placed",
              "occurred_at": "2026-11-20T10:00:00.5+01:00", "properties": {"total": 12.5, "sku": ["a", "b"]}}
             for i in range(3)] + [{"user_id": "u", "event_type": "page_viewed", "properties": None}]
    body = orjson.dumps({"batch": batch})
    columns = _parse_track_batch(body, RECEIVED)
    assert columns == parse_track_checked(body, RECEIVED)
    assert columns.event_ids == ["e0", "e1", "e2", None]
    nine_utc = datetime(2026, 11, 20, 9, 0, 0, 500_000, tzinfo=timezone.utc)
    assert columns.occurred_at[0] == (nine_utc - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    assert columns.occurred_at[3] == RECEIVED
    assert columns.properties[0] == b'{"total":12.5,"sku":["a","b"]}' and columns.properties[3] == b"{}"


@pytest.mark.parametrize("body", [
    b'{"batch":[{"user_id":"u","event_type":"t","occurred_at":"2026-11-20T10:00:00"}]}',  # no zone
    b'{"batch":[{"user_id":"u","event_type":"t","properties":{"n":123456789012345678901234567890}}]}',
    b'{"batch":[{"user_id":"\\ud800","event_type":"t"}]}',  # a lone surrogate
    b'{"batch":[{"user_id":"u","event_type":"t","extra":1}]}',
    b'{"batch":[]}',
])
def test_unusual_bodies_are_answered_by_the_reference(body):
    assert outcome(parse_track, body) == outcome(parse_track_checked, body)
