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
