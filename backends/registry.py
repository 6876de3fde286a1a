"""Backends by name: ``interactive`` (previews, on-demand evaluation, members pages, profile
reads) and ``batch`` (compute jobs, exports), each created on first use and closed together.

A backend is registered by adding its factory to ``FACTORIES`` (name -> callable taking the
settings and the lake); factories import their package lazily, so an engine a process does not
use (a JVM for Spark) is never loaded.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from backends.relations import TenantLake, describe

if TYPE_CHECKING:
    from backends.base import QueryBackend
    from storage.lake import EventLake


def _duckdb(settings, lake: EventLake) -> QueryBackend:
    from backends.duckdb import DuckDBBackend

    return DuckDBBackend(lake.store, settings)


def _spark(settings, lake: EventLake) -> QueryBackend:
    from backends.spark.backend import SparkBackend

    return SparkBackend(lake.store, settings)


FACTORIES: dict[str, Callable[..., QueryBackend]] = {
    "duckdb": _duckdb,
    "spark": _spark,
}


class Backends:
    """The process's query backends (``runtime.backends``)."""

    def __init__(self, settings, lake: EventLake, *, interactive: str = "duckdb", batch: str = "duckdb"):
        for name in (interactive, batch):
            if name not in FACTORIES:
                raise ValueError(f"unknown query backend {name!r}; expected one of {', '.join(FACTORIES)}")
        self._settings, self._lake = settings, lake
        self._interactive, self._batch = interactive, batch
        self._open: dict[str, QueryBackend] = {}
        self._lakes: dict[int, TenantLake] = {}  # tenant -> its latest described snapshot
        self._lock = threading.Lock()

    def get(self, name: str) -> QueryBackend:
        backend = self._open.get(name)
        if backend is None:
            if name not in FACTORIES:
                raise ValueError(f"unknown query backend {name!r}; expected one of {', '.join(FACTORIES)}")
            with self._lock:
                backend = self._open.get(name)
                if backend is None:
                    backend = self._open[name] = FACTORIES[name](self._settings, self._lake)
        return backend

    @property
    def interactive(self) -> QueryBackend:
        return self.get(self._interactive)

    @property
    def batch(self) -> QueryBackend:
        return self.get(self._batch)

    def tenant_lake(self, tenant_id: int) -> TenantLake:
        """The tenant's current events and profiles snapshots described for the compiler,
        once per snapshot pair (whichever backend then runs the query)."""
        events = self._lake.snapshot(tenant_id)
        profiles = self._lake.profiles_snapshot(tenant_id)
        key = (int(tenant_id), events.seq, profiles.seq)
        cached = self._lakes.get(key[0])
        if cached is None or cached.key != key:
            cached = self._lakes[key[0]] = describe(events, profiles)
        return cached

    def close(self) -> None:
        with self._lock:
            backends, self._open = list(self._open.values()), {}
        for backend in backends:
            backend.close()
