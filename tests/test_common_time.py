"""common.time: the stored and served text stays what the replaced helpers wrote (no data migration),
and naive and aware values round-trip to the same instant."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from common.ids import MAX_ID, valid_id
from common.time import (
    api_time,
    db_time,
    iso_seconds,
    iso_utc,
    naive_utc,
    naive_utc_now,
    now_us,
    parse_db_time,
    utc_now,
)

NAIVE = datetime(2026, 4, 25, 14, 32, 0, 123456)
AWARE = datetime(2026, 4, 25, 14, 32, 0, 123456, tzinfo=UTC)
PLUS_TWO = datetime(2026, 4, 25, 16, 32, 0, 123456, tzinfo=timezone(timedelta(hours=2)))  # the same instant


def test_stored_text_is_unchanged():
    for moment in (NAIVE, AWARE, PLUS_TWO):
        assert db_time(moment) == "2026-04-25T14:32:00.123456Z"
    assert db_time(datetime(2026, 4, 25, 14, 32)) == "2026-04-25T14:32:00.000000Z"
    for moment in (NAIVE, AWARE, PLUS_TWO):
        assert iso_seconds(moment) == "2026-04-25T14:32:00Z"  # accounts' stored form


def test_served_text_is_unchanged():
    assert api_time("2026-04-25T14:32:00.123456Z") == "2026-04-25T14:32:00Z"
    assert api_time(None) is None
    assert iso_utc(NAIVE) == "2026-04-25T14:32:00.123456Z"
    assert iso_utc(PLUS_TWO) == "2026-04-25T14:32:00.123456Z"
    assert iso_utc(datetime(2026, 4, 25, 14, 32)) == "2026-04-25T14:32:00Z"  # isoformat: no zero microseconds
    assert iso_utc(None) is None


def test_parse_db_time_is_aware_utc():
    parsed = parse_db_time("2026-04-25T14:32:00.123456Z")
    assert parsed == AWARE and parsed.utcoffset() == timedelta(0)
    assert parse_db_time("2026-04-25T14:32:00.123456") == AWARE  # no offset means UTC, not local time
    assert parse_db_time("2026-04-25T16:32:00.123456+02:00") == AWARE
    assert parse_db_time(None) is None


def test_round_trips():
    for moment in (NAIVE, AWARE, PLUS_TWO):
        parsed = parse_db_time(db_time(moment))
        assert parsed == AWARE
        assert naive_utc(parsed) == NAIVE
        assert db_time(parsed) == db_time(moment)
    assert naive_utc(NAIVE) is NAIVE
    assert naive_utc(PLUS_TWO) == NAIVE and naive_utc(PLUS_TWO).tzinfo is None


def test_now_in_each_form():
    before = datetime.now(UTC)
    aware, naive, micros = utc_now(), naive_utc_now(), now_us()
    after = datetime.now(UTC)
    assert aware.tzinfo is not None and naive.tzinfo is None
    assert before <= aware <= after
    assert before.replace(tzinfo=None) <= naive <= after.replace(tzinfo=None)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (before - epoch) // timedelta(microseconds=1) <= micros <= (after - epoch) // timedelta(microseconds=1)


def test_id_range():
    assert MAX_ID == 9_223_372_036_854_775_807  # SQLite's largest INTEGER
    assert valid_id(1) and valid_id(MAX_ID)
    assert not valid_id(0) and not valid_id(-1) and not valid_id(MAX_ID + 1)
