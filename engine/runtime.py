"""The running system: one object that owns the stores and background workers.

The API builds one Runtime per process and reaches every service through it.
Services are created lazily so a CLI command pays only for what it uses.
Feature modules add their service here as a cached_property.
"""
from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from functools import cached_property

from engine.settings import Settings
from storage.metadata import MetadataStore


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        settings.ensure_data_dir()
        self.meta = MetadataStore(settings.metadata_path)
        self._stoppers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.workers: list[threading.Thread] = []  # background threads readiness expects alive

    @cached_property
    def accounts(self):
        """Tenants, users, API keys, JWTs (engine.accounts)."""
        from engine.accounts import Accounts

        return Accounts(self.meta, secret_loader=lambda: self.settings.secret_key)

    @cached_property
    def readiness(self):
        """GET /readyz's probe (engine.health), shared by concurrent callers."""
        from engine.health import ReadinessProbe

        return ReadinessProbe(self)

    @cached_property
    def metrics(self):
        """Prometheus metrics of this runtime, in its own registry (engine.metrics)."""
        from engine.metrics import Metrics

        return Metrics(self)

    @cached_property
    def rate_limiter(self):
        """Request limits per tenant, login and client address, shared by the processes on this data dir
        (engine.ratelimit)."""
        from engine.ratelimit import RateLimiter

        return RateLimiter(self.settings.data_dir / "ratelimit.sqlite")

    @cached_property
    def lake(self):
        """The event lake (storage.lake.EventLake): local dir or s3:// from settings."""
        from storage.lake import EventLake

        return EventLake.from_settings(self.settings)

    @cached_property
    def ingest(self):
        """Event ingest: WAL group commit, dedup window, flusher (engine.ingest). Opening it
        replays what an earlier run left in the WAL."""
        from engine.ingest import IngestService

        service = IngestService.open(self)
        self.on_stop(service.close)
        return service

    @cached_property
    def dead_letters(self):
        """Records the ingest flusher could not write to the lake (storage.dead_letters); readable
        without opening ingest, so without owning the WAL."""
        from storage.dead_letters import DeadLetters

        return DeadLetters(self.settings.dead_letter_dir)

    @cached_property
    def backends(self):
        """The query backends that run previews, computations, exports and lake reads (backends/)."""
        from backends.registry import Backends

        backends = Backends(self.settings, self.lake, interactive=self.settings.preview_backend,
                            batch=self.settings.query_backend)
        self.on_stop(backends.close)
        return backends

    @cached_property
    def segment_jobs(self):
        """Wake-up of the segment compute worker (engine.compute)."""
        from engine.compute import ComputeQueue

        return ComputeQueue(self)

    @cached_property
    def membership(self):
        """The online membership index, loaded from SQLite + the lake (engine.membership)."""
        from engine.membership import build_index

        return build_index(self)

    @cached_property
    def exports(self):
        """Segment member exports (engine.exports)."""
        from engine.exports import Exports

        return Exports(self)

    @cached_property
    def sends(self):
        """Templates, brand kits, assets, recipients, emails, journeys, broadcasts (engine.sends)."""
        from engine.sends.service import Sends

        return Sends(self)

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stoppers.append(fn)

    def add_worker(self, thread: threading.Thread) -> None:
        """A background thread that must stay alive while the runtime runs (readiness checks it)."""
        self.workers.append(thread)

    def start_workers(self) -> None:
        """Start background workers (flusher, compute, exports, membership index, sends, lake
        maintenance). Each module registers its start function in WORKERS when imported; a start
        function hands the threads it starts to ``add_worker``."""
        import importlib

        for module in WORKER_MODULES:
            importlib.import_module(module)
        for start in WORKERS:
            start(self)

    def stop(self) -> None:
        for fn in reversed(self._stoppers):
            fn()
        self._stoppers.clear()


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector from stalling requests.

    An ingest request parses thousands of short-lived dicts; refcounting frees them, but
    with the default thresholds they trigger collections whose full passes traverse
    every object the process loaded at start (about 130k): 90-120 ms with the GIL held,
    every second or so under load, which was the whole HTTP ingest p99
    (``benchmarks/bench_ingest.py``: p99 152 ms before). Start-up objects move to the
    permanent generation and young collections run every 50k net allocations instead
    of 700, so cycles are still collected, just in small pauses."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def lower_thread_priority(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux: per-thread nice; a no-op elsewhere),
    so background work on a 2-core machine yields to request handling."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


WORKER_MODULES = ("engine.ingest", "engine.compute", "engine.exports", "engine.membership",
                  "engine.sends.worker", "engine.maintenance")

# Functions taking a Runtime that start a background worker and register its stop with on_stop.
WORKERS: list[Callable[[Runtime], None]] = []
