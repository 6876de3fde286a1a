"""Small things every sends module shares: the input error type (and NotFound, from engine.errors),
UTC time in the two text forms we store and serve, and JSON helpers."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from engine.errors import InvalidInput, NotFound


class SendsError(InvalidInput):
    """Bad input to a sends operation; ``field`` names the offending field path. A refusal of
    another kind raises that kind (engine.errors) with ``field=``."""

    def __init__(self, field: str, message: str, code: str = "invalid"):
        super().__init__(message, code=code, field=field)


def utc_now() -> datetime:
    return datetime.now(UTC)


def db_time(moment: datetime) -> str:
    """Fixed-width UTC text (sorts like the instant it names): ``2026-04-25T14:32:00.000000Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def api_time(text: str | None) -> str | None:
    """Stored time -> the API's form, as every segops endpoint gives it: ``2026-04-25T14:32:00Z``."""
    return None if text is None else text[:19] + "Z"


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def loads(text: str | bytes | None, default: Any = None) -> Any:
    return default if text is None else orjson.loads(text)


__all__ = ["NotFound", "SendsError", "api_time", "db_time", "dumps", "loads", "parse_time", "utc_now"]
