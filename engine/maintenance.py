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
    from engine.runtime import Runtime

log = logging.getLogger("segops.maintenance")

COMPACT_EVERY_SECONDS = 300.0


def maintain_lake(runtime: Runtime) -> int:
    """Compact every tenant's events, then collect garbage; returns files deleted."""
    lake = runtime.lake
    for tenant_id in lake.all_tenants():
        try:
            lake.compact(tenant_id)
        except Exception:  # one tenant's failure must not stop the others
            log.exception("compaction failed for tenant %s", tenant_id)
    return lake.collect_garbage()


def start_lake_maintenance(runtime: Runtime) -> None:
    """A thread that maintains the lake every COMPACT_EVERY_SECONDS (Runtime.start_workers)."""
    if runtime.settings.read_only:
        return
    stop = threading.Event()

    def loop() -> None:
        lower_thread_priority()
        while not stop.wait(COMPACT_EVERY_SECONDS):
            try:
                maintain_lake(runtime)
            except Exception:
                log.exception("lake maintenance failed")

    thread = threading.Thread(target=loop, name="segops-lake-maintenance", daemon=True)
    thread.start()
    runtime.add_worker(thread)

    def stop_worker() -> None:
        stop.set()
        thread.join(timeout=60)

    runtime.on_stop(stop_worker)
