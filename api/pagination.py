"""Pagination in the two shapes of the seed (segops-api-overview, "Pagination").

Offset (standard list endpoints)::

    @router.get("/api/things/")
    async def list_things(request: Request, page: OffsetPage = Depends(offset_params), ...):
        count, rows = ...  # SELECT ... LIMIT page.limit OFFSET page.offset
        return offset_response(request, page, count, rows)
    # -> {"count", "next", "previous", "results"}; next/previous are absolute URLs or null

Cursor (large collections, e.g. members)::

    after = decode_cursor(cursor)            # None for the first page; 400 invalid_cursor if bad
    ...
    return cursor_response(results, encode_cursor(last_user_id) if more else None, count)
    # -> {"results", "next_cursor", "count"}

A cursor is urlsafe base64 (no padding) of a JSON value, opaque to clients: a bare string encodes to
the base64 of its bytes (``"user-5678"`` -> ``dXNlci01Njc4``, as in the seed); other values are
JSON. Never trust the decoded value's type: validate it before use.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Query, Request

from api.errors import ApiError
from common.ids import MAX_ID

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = MAX_ID  # an offset binds as a SQLite integer too


@dataclass(frozen=True)
class OffsetPage:
    limit: int
    offset: int


def offset_params(limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
                  offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> OffsetPage:
    """Dependency: ``?limit=`` (1..1000, default 50) and ``?offset=`` (0..2**63-1, SQLite's integer
    range); out of range -> 400."""
    return OffsetPage(limit, offset)


def offset_response(request: Request, page: OffsetPage, count: int, results: list[Any]) -> dict[str, Any]:
    url = request.url
    following = None
    if page.offset + page.limit < count:
        following = str(url.include_query_params(limit=page.limit, offset=page.offset + page.limit))
    previous = None
    if page.offset > 0:
        before = max(0, page.offset - page.limit)
        previous = str(url.include_query_params(limit=page.limit, offset=before) if before
                       else url.remove_query_params("offset").include_query_params(limit=page.limit))
    return {"count": count, "next": following, "previous": previous, "results": results}


def encode_cursor(value: Any) -> str:
    raw = value.encode() if isinstance(value, str) else b"\x00" + orjson.dumps(value)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, field: str = "cursor") -> Any:
    """The value behind a cursor (None for no cursor); 400 ``invalid_cursor`` when it is not ours."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        if not raw:
            raise ValueError("empty cursor")
        if raw.startswith(b"\x00"):
            return orjson.loads(raw[1:])
        return raw.decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError.field(field, "not a valid cursor", "invalid_cursor") from None


def cursor_response(results: list[Any], next_cursor: str | None, count: int | None) -> dict[str, Any]:
    return {"results": results, "next_cursor": next_cursor, "count": count}
