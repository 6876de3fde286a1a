"""The local metadata database (SQLite): tenants, keys, segments, jobs, journeys, sends.

SQLite because the embedded default must run with no server, and because its
transactions give us the at-most-once bookkeeping that sends and journeys need.
Each feature module declares its own tables with ``MetadataStore.ensure_schema``;
DDL is idempotent so every process can call it at start-up; a change DDL cannot say that way
(moving data) is a versioned ``migrate``.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class MetadataStore:
    def __init__(self, path: str | Path, synchronous: str = "FULL", busy_timeout: float = 30.0):
        """``synchronous="OFF"`` for a database whose loss in a power cut costs nothing (rate-limit counters);
        a short ``busy_timeout`` (seconds) for one whose callers must not wait on another process's lock."""
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(f"synchronous must be OFF, NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._schemas: set[str] = set()
        self._schema_lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections are not thread-safe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so read-then-write is atomic."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.connection().execute(sql, params)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        return self.connection().execute(sql, params).fetchone()

    def page(self, from_where: str, params: Sequence[Any], order_by: str, limit: int, offset: int,
             columns: str = "*") -> tuple[int, list[sqlite3.Row]]:
        """(rows in ``FROM {from_where}``, one page of them in ``order_by`` order): the shape of every
        offset-paged list. The SQL fragments are ours; values travel in ``params``."""
        count = self.query_one(f"SELECT count(*) FROM {from_where}", tuple(params))[0]
        rows = self.query(f"SELECT {columns} FROM {from_where} ORDER BY {order_by} LIMIT ? OFFSET ?",
                          (*params, limit, offset))
        return count, rows

    def ensure_schema(self, name: str, ddl: str) -> None:
        """Apply a module's idempotent DDL once per process."""
        if name in self._schemas:
            return
        with self._schema_lock:
            if name not in self._schemas:
                self.connection().executescript(ddl)
                self._schemas.add(name)

    def migrate(self, name: str, version: int,
                steps: Sequence[str | Callable[[sqlite3.Connection], None]]) -> bool:
        """Bring ``name`` from ``version - 1`` to ``version`` with ``steps`` (SQL statements, or functions
        of the connection; callers migrate version by version, in order) in ONE transaction, after
        copying the database to ``<file>.pre-<name>`` (the steps cannot be undone otherwise). Every
        process may call it at start-up: it runs once; returns whether it ran."""
        conn = self.connection()
        conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        if self._version(conn, name) >= version:
            return False
        backup = sqlite3.connect(self.path.with_name(f"{self.path.name}.pre-{name}"))
        try:
            conn.backup(backup)
        finally:
            backup.close()
        with self.transaction() as tx:
            if self._version(tx, name) >= version:  # another process migrated meanwhile
                return False
            for step in steps:
                if isinstance(step, str):
                    tx.execute(step)
                else:
                    step(tx)
            tx.execute("INSERT INTO schema_versions (name, version) VALUES (?, ?)"
                       " ON CONFLICT (name) DO UPDATE SET version = excluded.version", (name, version))
        return True

    @staticmethod
    def _version(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT version FROM schema_versions WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else row[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
