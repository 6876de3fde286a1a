"""User profiles as the API shows them: latest traits (the lake's profiles table), recent
events (the lake's events) and current segments (the membership index).

Search matches a user id prefix or a prefix of any string trait, case-insensitively for
traits (``alice@`` finds ``Alice@example.com``); ``%`` and ``_`` are literal characters. Only
the caller's tenant's snapshot is ever read, so another tenant's user is simply not found.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from common.time import iso_utc
from storage.duck import current_profiles_sql

if TYPE_CHECKING:
    from engine.runtime import Runtime

RECENT_EVENTS = 20


def _profile_json(user_id: str, updated_at: datetime, traits: str) -> dict[str, Any]:
    return {"user_id": user_id, "traits": orjson.loads(traits), "updated_at": iso_utc(updated_at)}


def search_profiles(runtime: Runtime, tenant_id: int, search: str | None, limit: int,
                    offset: int) -> tuple[int, list[dict[str, Any]]]:
    """(matching profiles, one page of them in user_id order)."""
    snapshot = runtime.lake.profiles_snapshot(tenant_id)
    if snapshot.file is None:
        return 0, []
    where = ""
    if search:
        string_columns = [column for column, kind in snapshot.traits.values() if kind == "string"]
        # Column names come from the lake's catalog ([a-z0-9_] only); values are bound.
        tests = ["starts_with(user_id, $search)"] + [
            f'starts_with(lower("{column}"), lower($search))' for column in string_columns]
        where = " WHERE " + " OR ".join(tests)
    named = {"search": search} if search else {}
    profiles = current_profiles_sql(snapshot.file, snapshot.delta)
    cursor = runtime.segment_queries.cursor()
    try:
        count = cursor.execute(f"SELECT count(*) FROM {profiles}{where}", named).fetchone()[0]
        rows = cursor.execute(
            f"SELECT user_id, updated_at, traits FROM {profiles}{where} ORDER BY user_id"
            " LIMIT $limit OFFSET $offset", {**named, "limit": limit, "offset": offset}).fetchall()
    finally:
        cursor.close()
    return count, [_profile_json(*row) for row in rows]


def get_profile(runtime: Runtime, tenant_id: int, user_id: str) -> dict[str, Any] | None:
    """Traits, the newest ``RECENT_EVENTS`` events and current segment ids; None when the
    tenant has neither a profile nor an event for ``user_id``."""
    profiles = runtime.lake.profiles_snapshot(tenant_id)
    events = runtime.lake.snapshot(tenant_id)
    cursor = runtime.segment_queries.cursor()
    try:
        profile = None
        if profiles.file is not None:
            profile = cursor.execute(
                f"SELECT user_id, updated_at, traits FROM {current_profiles_sql(profiles.file, profiles.delta)}"
                " WHERE user_id = $user", {"user": user_id}).fetchone()
        recent = []
        if events.files:
            recent = cursor.execute(
                "SELECT event_id, event_type, occurred_at, received_at, properties"
                " FROM read_parquet($files, hive_partitioning = true, union_by_name = true)"
                " WHERE user_id = $user ORDER BY occurred_at DESC, received_at DESC, event_id LIMIT $n",
                {"files": list(events.files), "user": user_id, "n": RECENT_EVENTS}).fetchall()
    finally:
        cursor.close()
    if profile is None and not recent:
        return None
    body = _profile_json(*profile) if profile else {"user_id": user_id, "traits": {}, "updated_at": None}
    body["recent_events"] = [
        {"event_id": event_id, "event_type": event_type, "occurred_at": iso_utc(occurred_at),
         "received_at": iso_utc(received_at), "properties": orjson.loads(properties)}
        for event_id, event_type, occurred_at, received_at, properties in recent]
    body["segment_ids"] = runtime.membership.memberships(tenant_id, [user_id])[0].segment_ids
    return body
