"""Who hears about accepted events: the runtime subscribes consumers (journeys) here, and whoever
makes a batch durable (the events route, engagement tracking) hands it to ``accepted``.

The feed knows no consumer, so ingest and the routes import nothing of journeys, and a process
that never loads the api package triggers journeys all the same.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# (tenant_id, accepted events as an EVENT_SCHEMA table) -> how many journeys it matched
AcceptedListener = Callable[[int, "pa.Table"], int]


class EventFeed:
    def __init__(self) -> None:
        self._accepted: list[AcceptedListener] = []
        # A plain attribute: the events route reads it on every request and skips the threadpool hop
        # when nobody listens.
        self.has_accepted = False

    def subscribe_accepted(self, listener: AcceptedListener) -> None:
        self._accepted.append(listener)
        self.has_accepted = True

    def accepted(self, tenant_id: int, events: pa.Table) -> int:
        """Hand a durable batch to every listener; returns the sum of their matches (journeys_matched).
        A listener persists whatever it needs itself: a failing one is logged and counts 0 (the
        events stay accepted)."""
        matched = 0
        for listener in list(self._accepted):
            try:
                matched += int(listener(tenant_id, events) or 0)
            except Exception:
                log.exception("accepted-events listener %r failed", listener)
        return matched
