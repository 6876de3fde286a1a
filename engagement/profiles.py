"""Recipient profiles (traits incl. ``email``, ``timezone``) read from the lake's profiles table.

The lake owns profiles (identify calls, merged per trait); sends only read them, in batches:
one query of the interactive backend per chunk of recipients over the tenant's current profiles.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from sqlglot import exp

from backends.relations import PROFILES_TABLE, bind, placeholder

if TYPE_CHECKING:
    from backends.registry import Backends
    from storage.lake import EventLake


class ProfileDirectory:
    def __init__(self, lake: EventLake, backends: Backends):
        self.lake = lake
        self.backends = backends

    def known_traits(self, tenant_id: int) -> list[str]:
        return sorted(self.lake.profiles_snapshot(tenant_id).traits)

    def traits(self, tenant_id: int, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """user_id -> traits for those of ``user_ids`` that have a profile."""
        wanted = sorted({str(u) for u in user_ids})
        backends = self.backends
        lake = backends.tenant_lake(tenant_id)
        if not wanted or lake.profiles.file is None:
            return {}
        backend = backends.interactive
        query = (exp.select(exp.column("user_id"), exp.column("traits")).from_(placeholder(PROFILES_TABLE))
                 .where(exp.In(this=exp.column("user_id"), expressions=[exp.Literal.string(u) for u in wanted])))
        rows = backend.fetch_arrow(bind(query, backend.relations(lake))).to_pylist()
        return {r["user_id"]: orjson.loads(r["traits"]) if r["traits"] else {} for r in rows}

    def one(self, tenant_id: int, user_id: str) -> dict[str, Any] | None:
        return self.traits(tenant_id, [user_id]).get(str(user_id))
