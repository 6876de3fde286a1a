"""Small things every sends module shares: the error type routers turn into the API envelope and JSON
helpers (time: ``common.time``; ids: ``common.ids``)."""
from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


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
