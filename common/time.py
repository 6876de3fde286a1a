"""UTC time in the forms segops keeps and serves.

Two conventions, each where it must be: code that meets SQLite only (accounts, sends, journeys) holds aware
instants; the lake and a computation's ``as_of`` hold naive UTC wall time (``pa.timestamp("us")``, no zone),
so lake-side code asks for ``naive_utc_now()`` / ``naive_utc(moment)``. Whatever the form in memory, SQLite
stores ``db_time`` text (fixed width, so it sorts like the instant it names; accounts keep whole seconds,
``iso_seconds``) and the API serves whole seconds with a ``Z`` (``api_time``).

``naive_utc`` is the plain twin of ``compiler.timestamps.to_utc_naive``, which adds the years 1-9999 check:
storage needs this and never imports the compiler, and the compiler imports nothing of ours.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

_DB_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """Now, aware."""
    return datetime.now(UTC)


def naive_utc(moment: datetime) -> datetime:
    """``moment``'s UTC wall time without a zone (a naive moment already means UTC)."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def naive_utc_now() -> datetime:
    """Now as naive UTC: the lake's and ``as_of``'s convention."""
    return naive_utc(utc_now())


def now_us() -> int:
    """Now in microseconds since the epoch (the lake's ``received_at``)."""
    return time.time_ns() // 1000


def db_time(moment: datetime) -> str:
    """Aware or naive-UTC ``moment`` -> the text SQLite stores: ``2026-04-25T14:32:00.000000Z``."""
    return naive_utc(moment).strftime(_DB_FORMAT)


def parse_db_time(text: str | None) -> datetime | None:
    """``db_time`` text (or any ISO 8601 time; without an offset it means UTC) -> aware UTC; None stays None."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def api_time(text: str | None) -> str | None:
    """Stored time -> the API's form, as every segops endpoint gives it: ``2026-04-25T14:32:00Z``."""
    return None if text is None else text[:19] + "Z"


def iso_seconds(moment: datetime) -> str:
    """Aware or naive-UTC ``moment`` -> whole-second UTC text, ``2026-04-25T14:32:00Z`` (what accounts store)."""
    return naive_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(moment: datetime | None) -> str | None:
    """Aware or naive-UTC ``moment`` -> ISO 8601 with a ``Z``, microseconds only when there are some."""
    return None if moment is None else naive_utc(moment).isoformat() + "Z"
