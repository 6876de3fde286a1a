"""Recipient profiles (traits incl. ``email``, ``timezone``) read from the lake's profiles table.

The lake owns profiles (identify calls, merged per trait); sends only read them, in batches:
one DuckDB query per chunk of recipients over the tenant's current profiles file.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from storage.duck import current_profiles_sql

if TYPE_CHECKING:
    from engine.runtime import Runtime


class ProfileDirectory:
    def __init__(self, runtime: "Runtime"):
        self.runtime = runtime

    def known_traits(self, tenant_id: int) -> list[str]:
        return sorted(self.runtime.lake.profiles_snapshot(tenant_id).traits)

    def traits(self, tenant_id: int, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """user_id -> traits for those of ``user_ids`` that have a profile."""
        wanted = sorted({str(u) for u in user_ids})
        snapshot = self.runtime.lake.profiles_snapshot(tenant_id)
        if not wanted or snapshot.file is None:
            return {}
        cursor = self.runtime.segment_queries.cursor()
        try:
            rows = cursor.execute(
                f"SELECT user_id, traits FROM {current_profiles_sql(snapshot.file, snapshot.delta)}"
                " WHERE user_id IN (SELECT unnest(?::VARCHAR[]))", [wanted]).fetchall()
        finally:
            cursor.close()
        return {user_id: orjson.loads(traits) if traits else {} for user_id, traits in rows}

    def one(self, tenant_id: int, user_id: str) -> dict[str, Any] | None:
        return self.traits(tenant_id, [user_id]).get(str(user_id))
