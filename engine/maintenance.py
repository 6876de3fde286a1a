"""Lake upkeep in the background: compaction and garbage collection.

Appends (the flusher, bulk ingest) write many small files; compaction merges each day into
large sorted files and garbage collection deletes what the grace period has released. Both
are safe to run while queries and appends go on (storage/lake.py explains why).
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from engine.threads import lower_thread_priority

if TYPE_CHECKING:
    from storage.lake import EventLake

log = logging.getLogger("segops.maintenance")

COMPACT_EVERY_SECONDS = 300.0


def maintain_lake(lake: EventLake) -> int:
    """Compact every tenant's events, then collect garbage; returns files deleted."""
    for tenant_id in lake.all_tenants():
        try:
            lake.compact(tenant_id)
        except Exception:  # one tenant's failure must not stop the others
            log.exception("compaction failed for tenant %s", tenant_id)
    return lake.collect_garbage()


class LakeMaintenance:
    """A thread that maintains ``lake`` every ``every`` seconds (started by Runtime.start_workers)."""

    def __init__(self, lake: EventLake, every: float = COMPACT_EVERY_SECONDS):
        self.lake, self.every = lake, every
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="segops-lake-maintenance", daemon=True)

    def start(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        lower_thread_priority()
        while not self._stop.wait(self.every):
            try:
                maintain_lake(self.lake)
            except Exception:
                log.exception("lake maintenance failed")
