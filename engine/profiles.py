"""User profiles as the API shows them: latest traits (the lake's profiles table), recent
events (the lake's events) and current segments (the membership index).

Search matches a user id prefix or a prefix of any string trait, case-insensitively for
traits (``alice@`` finds ``Alice@example.com``); ``%`` and ``_`` are literal characters. Only
the caller's tenant's snapshot is ever read, so another tenant's user is simply not found.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlglot import exp

from backends.relations import EVENTS_TABLE, PROFILES_TABLE, bind, placeholder
from common.time import iso_utc

if TYPE_CHECKING:
    from backends.registry import Backends

RECENT_EVENTS = 20


def _profile_json(user_id: str, updated_at: datetime, traits: str) -> dict[str, Any]:
    return {"user_id": user_id, "traits": orjson.loads(traits), "updated_at": iso_utc(updated_at)}


class ProfileReads:
    """Profile reads on the interactive backend. ``memberships(tenant_id, user_ids)`` is the membership
    index's lookup (a callable: the index is loaded only when a profile is first read)."""

    def __init__(self, backends: Backends, memberships: Callable[[int, list[str]], list[Any]]):
        self.backends, self.memberships = backends, memberships

    def search(self, tenant_id: int, term: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """(matching profiles, one page of them in user_id order)."""
        lake = self.backends.tenant_lake(tenant_id)
        if lake.profiles.file is None:
            return 0, []
        count_query = exp.select(exp.Count(this=exp.Star())).from_(placeholder(PROFILES_TABLE))
        page_query = (exp.select(*map(exp.column, ("user_id", "updated_at", "traits")))
                      .from_(placeholder(PROFILES_TABLE)).order_by(exp.column("user_id")).limit(limit).offset(offset))
        if term:
            string_columns = [column for column, kind in lake.profiles.traits.values() if kind == "string"]
            text = exp.Literal.string(term)
            where = exp.or_(exp.StartsWith(this=exp.column("user_id"), expression=text.copy()), *(
                exp.StartsWith(this=exp.Lower(this=exp.column(column, quoted=True)),
                               expression=exp.Lower(this=text.copy()))
                for column in string_columns))
            count_query, page_query = count_query.where(where), page_query.where(where.copy())
        backend = self.backends.interactive
        relations = backend.relations(lake)
        count = backend.fetch_arrow(bind(count_query, relations)).column(0)[0].as_py()
        rows = backend.fetch_arrow(bind(page_query, relations)).to_pylist()
        return count, [_profile_json(row["user_id"], row["updated_at"], row["traits"]) for row in rows]

    def get(self, tenant_id: int, user_id: str) -> dict[str, Any] | None:
        """Traits, the newest ``RECENT_EVENTS`` events and current segment ids; None when the
        tenant has neither a profile nor an event for ``user_id``."""
        lake = self.backends.tenant_lake(tenant_id)
        backend = self.backends.interactive
        relations = backend.relations(lake)

        def of_user(table: str, *columns: str) -> exp.Select:
            return exp.select(*map(exp.column, columns)).from_(placeholder(table)).where(
                exp.EQ(this=exp.column("user_id"), expression=exp.Literal.string(user_id)))

        def rows(query: exp.Select) -> list[tuple]:
            return [tuple(row.values()) for row in backend.fetch_arrow(bind(query, relations)).to_pylist()]

        profile = None
        if lake.profiles.file is not None:
            profile = next(iter(rows(of_user(PROFILES_TABLE, "user_id", "updated_at", "traits"))), None)
        recent = []
        if lake.events.files:
            recent = rows(of_user(EVENTS_TABLE, "event_id", "event_type", "occurred_at", "received_at", "properties")
                          .order_by(exp.column("occurred_at").desc(), exp.column("received_at").desc(),
                                    exp.column("event_id")).limit(RECENT_EVENTS))
        if profile is None and not recent:
            return None
        body = _profile_json(*profile) if profile else {"user_id": user_id, "traits": {}, "updated_at": None}
        body["recent_events"] = [
            {"event_id": event_id, "event_type": event_type, "occurred_at": iso_utc(occurred_at),
             "received_at": iso_utc(received_at), "properties": orjson.loads(properties)}
            for event_id, event_type, occurred_at, received_at, properties in recent]
        body["segment_ids"] = self.memberships(tenant_id, [user_id])[0].segment_ids
        return body
