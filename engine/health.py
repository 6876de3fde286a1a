"""Readiness: can this process do its work right now (``GET /readyz``)?

Each check writes for real -- a probe object in the lake, a probe file in the write-ahead log's
directory, a write lock on the metadata DB -- because permission bits prove nothing (a server
running as root passes them all, a full disk or a read-only mount does not show in them). The
answers name the check and the error class only, never a path or tenant data: the endpoint is
unauthenticated. Details go to the log.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.settings import Settings
    from storage.objectstore import ObjectStore

log = logging.getLogger("segops.health")

OK, SKIPPED = "ok", "skipped"
DB_LOCK_TIMEOUT = 5.0  # seconds a probe waits for the metadata DB's write lock


class ReadinessProbe:
    """The checks of one process for an endpoint anyone may call: each run writes to the disk (and S3) and
    takes the metadata DB's write lock, so concurrent calls share one run (a lock) and a passing answer is
    reused for ``max_age`` seconds. A failing one is not: the next call probes again, so recovery shows at
    once. It is given what it checks: the settings (metadata DB, WAL directory, read-only), the lake's
    store (a callable: a read-only process never opens it for a probe) and the list of worker threads the
    process keeps alive."""

    def __init__(self, settings: Settings, lake_store: Callable[[], ObjectStore], workers: list[threading.Thread],
                 max_age: float = 1.0):
        self.settings, self.lake_store, self.workers, self.max_age = settings, lake_store, workers, max_age
        self._lock = threading.Lock()
        self._passed: tuple[float, dict[str, str]] | None = None

    def __call__(self) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            if self._passed is not None and now - self._passed[0] < self.max_age:
                return self._passed[1]
            checks = self.readiness()
            self._passed = (now, checks) if all(v in (OK, SKIPPED) for v in checks.values()) else None
            return checks

    def readiness(self) -> dict[str, str]:
        """check name -> "ok", "skipped" (not this process's job) or what failed."""
        results = {}
        for name, check in (("metadata", self._metadata), ("lake", self._lake), ("wal", self._wal),
                            ("workers", self._workers)):
            try:
                results[name] = check() or OK
            except Exception as exc:  # noqa: BLE001 - a failed check is the answer, not an error
                log.warning("readiness check %s failed: %r", name, exc)  # probed every few seconds: no traceback
                results[name] = f"failed: {_reason(exc)}"
        return results

    def _metadata(self) -> None:
        # a fresh connection (mode=rw never creates a missing DB) and the write lock, released at once
        uri = f"{self.settings.metadata_path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=DB_LOCK_TIMEOUT, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def _lake(self) -> str | None:
        if self.settings.read_only:
            return SKIPPED
        key = f"_health/{_probe_name()}"
        store = self.lake_store()
        store.put_bytes(key, b"ok")
        store.delete(key)
        return None

    def _wal(self) -> str | None:
        if self.settings.read_only:
            return SKIPPED
        path = self.settings.wal_dir / _probe_name()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        return None

    def _workers(self) -> str | None:
        if not self.workers:
            return SKIPPED  # started without background workers (SEGOPS_RUN_WORKERS=0)
        dead = sorted(thread.name for thread in self.workers if not thread.is_alive())
        if dead:
            raise WorkersDead(dead)
        return None


def _probe_name() -> str:
    return f".probe-{os.getpid()}-{threading.get_ident()}"


class WorkersDead(RuntimeError):
    def __init__(self, names: list[str]):
        super().__init__(", ".join(names))


def _reason(exc: Exception) -> str:
    if isinstance(exc, WorkersDead):
        return f"not running: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    if isinstance(exc, sqlite3.Error):
        return f"{type(exc).__name__} ({exc})"  # SQLite's messages carry no path
    return type(exc).__name__

