"""Small things every sends module shares: the error type routers turn into the API envelope,
UTC time in the two text forms we store and serve, and JSON helpers."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id cannot exist


class SendsError(ValueError):
    """Bad input or a refused operation; ``field`` names the offending field path (API: 4xx)."""

    def __init__(self, field: str, message: str, code: str = "invalid", status: int = 400,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code
        self.status = status
        self.headers = headers or {}


class NotFound(LookupError):
    """A missing id, or another tenant's id (indistinguishable on purpose)."""

    def __init__(self, kind: str, ident: object):
        super().__init__(f"No {kind} {ident}.")
        self.kind = kind
        self.ident = ident


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


class CamelModel(BaseModel):
    """Request documents: SegmentFlow's camelCase field names, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)

    def doc(self) -> dict[str, Any]:
        """The fields the client sent, by their API names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
