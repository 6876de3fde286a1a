"""The instants segops accepts: written with a year 1-9999 and, once in UTC, within years 1-9999.

The lake stores naive UTC microseconds and everything that reads them back (Python datetimes,
DuckDB's conversion of dates to Python) ends at 0001-01-01 and 9999-12-31. ``0001-01-01T00:00:00+14:00``
is a valid ISO 8601 string whose instant lies in year 0: accepted, it stopped the lake's flusher
for every tenant (issue 12). So every entry point applies this one rule: HTTP track and identify
(``engine.ingest.parse``), bulk files (``engine.ingest.bulk``, the same bounds in SQL), a
definition's ``since``/``until`` and filter timestamps (``compiler.model.parse_timestamp``) and a
preview's ``as_of`` (``engine.segments.query.normalize_as_of``).

It lives in the compiler because the compiler imports nothing of ours, and both it and the engine
need it.
"""
from __future__ import annotations

from datetime import datetime, timedelta

MIN_UTC = datetime.min  # 0001-01-01 00:00:00, naive UTC
MAX_UTC = datetime.max  # 9999-12-31 23:59:59.999999
OUT_OF_RANGE = "outside years 1 to 9999 once converted to UTC"
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


class InstantOutOfRange(ValueError):
    """A timestamp whose UTC instant is before MIN_UTC or after MAX_UTC."""

    def __init__(self) -> None:
        super().__init__(OUT_OF_RANGE)


def to_utc_naive(moment: datetime) -> datetime:
    """The UTC instant of ``moment`` as a naive datetime (a naive one already means UTC);
    raises InstantOutOfRange if that instant is outside years 1-9999."""
    offset = moment.utcoffset()
    if offset is None:
        return moment
    try:
        return moment.replace(tzinfo=None) - offset
    except OverflowError:
        raise InstantOutOfRange() from None


def epoch_us(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (the lake's representation); raises InstantOutOfRange."""
    return (to_utc_naive(moment) - _EPOCH) // _US


MIN_US = epoch_us(MIN_UTC)
MAX_US = epoch_us(MAX_UTC)
