"""Small things every sends module shares: the input error type (and NotFound, from engine.errors)
and JSON helpers (time: ``common.time``; ids: ``common.ids``)."""
from __future__ import annotations

from typing import Any

import orjson

from engine.errors import InvalidInput, NotFound


class SendsError(InvalidInput):
    """Bad input to a sends operation; ``field`` names the offending field path. A refusal of
    another kind raises that kind (engine.errors) with ``field=``."""

    def __init__(self, field: str, message: str, code: str = "invalid"):
        super().__init__(message, code=code, field=field)


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def loads(text: str | bytes | None, default: Any = None) -> Any:
    return default if text is None else orjson.loads(text)


__all__ = ["NotFound", "SendsError", "dumps", "loads"]
