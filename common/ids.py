"""Ids are SQLite INTEGER PRIMARY KEYs: positive 64-bit integers. A larger id cannot exist, and would not bind."""
from __future__ import annotations

MAX_ID = 2**63 - 1


def valid_id(value: int) -> bool:
    """Whether ``value`` can name a row (an id outside the range answers like a missing one)."""
    return 1 <= value <= MAX_ID
