"""The running system: one object that owns the stores and background workers.

The API builds one Runtime per process and reaches every service through it.
Services are created lazily so a CLI command pays only for what it uses.
Feature modules add their service here as a cached_property.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property

from engine.settings import Settings
from storage.metadata import MetadataStore


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.meta = MetadataStore(settings.metadata_path)
        self._stoppers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @cached_property
    def accounts(self):
        """Tenants, users, API keys, JWTs (engine.accounts)."""
        from engine.accounts import Accounts

        return Accounts(self.meta, secret_loader=lambda: self.settings.secret_key)

    @cached_property
    def rate_limiter(self):
        """Per-tenant request limits (engine.ratelimit)."""
        from engine.ratelimit import RateLimiter

        return RateLimiter()

    @cached_property
    def segment_queries(self):
        """The DuckDB database that runs segment previews and computations (engine.segment_query)."""
        from engine.segment_query import SegmentQueries

        return SegmentQueries(self)

    @cached_property
    def segment_jobs(self):
        """Wake-up of the segment compute worker (engine.compute)."""
        from engine.compute import ComputeQueue

        return ComputeQueue(self)

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stoppers.append(fn)

    def start_workers(self) -> None:
        """Start background workers (flusher, scheduler, journey/send worker). Each feature
        registers its own start function in WORKERS."""
        for start in WORKERS:
            start(self)

    def stop(self) -> None:
        for fn in reversed(self._stoppers):
            fn()
        self._stoppers.clear()


# Functions taking a Runtime that start a background worker and register its stop with on_stop.
WORKERS: list[Callable[[Runtime], None]] = []
