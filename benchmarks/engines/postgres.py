"""PostgreSQL 15 (Debian package) on a throwaway cluster, loaded from the lake.

``setup`` starts a ``pg_server.PostgresServer``, exports the tenant's events and profiles
from the lake with DuckDB to CSV and loads them with ``COPY``, then builds the indexes an
expert would for these queries and runs ``VACUUM ANALYZE``. The load figures are reported
separately from query times; ``close`` stops the server and deletes the cluster. Queries are
the suite's hand-written SQL (the PostgreSQL variant where a segment has one).

Settings favour analytics on one machine (large work_mem, parallel workers); durability
settings are off because the cluster is thrown away after the run.
"""
from __future__ import annotations

import time

import duckdb

from benchmarks.engines.base import EngineUnavailable, HandSqlEngine
from benchmarks.engines.duckdb_hand import create_lake_views
from benchmarks.engines.pg_server import PostgresServer
from benchmarks.suite import SqlContext

SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "work_mem": "256MB",
    "maintenance_work_mem": "1GB",
    "effective_cache_size": "8GB",
    "random_page_cost": "1.1",
    "max_parallel_workers_per_gather": "2",
    "max_wal_size": "8GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
}
_SQL_TYPES = {"number": "double precision", "string": "text", "boolean": "boolean"}
INDEXES = [
    "CREATE INDEX events_tenant_type_time ON events (tenant_id, event_type, occurred_at)",
    "CREATE INDEX events_user ON events (user_id)",
    "ALTER TABLE profiles ADD PRIMARY KEY (tenant_id, user_id)",
]


class PostgresEngine(HandSqlEngine):
    name = "postgres"
    label = "PostgreSQL 15"

    @classmethod
    def unavailable(cls) -> str | None:
        return PostgresServer.unavailable()

    # -- server lifecycle --------------------------------------------------------------
    def _start(self) -> None:
        reason = self.unavailable()
        if reason:
            raise EngineUnavailable(reason)
        self.server = PostgresServer(SERVER_SETTINGS, prefix="segops-bench-pg-")
        self.server.start()
        self.directory = self.server.directory
        self.con = self.server.connect(autocommit=True)

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
            self.server = None

    # -- loading -------------------------------------------------------------------------
    def setup(self) -> dict[str, float]:
        try:
            self._start()
            return self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> dict[str, float]:
        ds = self.dataset
        properties = list(ds.snapshot.properties.values())
        traits = list(ds.profiles.traits.values())
        event_columns = ["tenant_id", "user_id", "event_type", "occurred_at", "event_date",
                         *(col for col, _ in properties)]
        profile_columns = ["tenant_id", "user_id", *(col for col, _ in traits)]
        started = time.perf_counter()
        events_csv, profiles_csv = self.directory / "events.csv", self.directory / "profiles.csv"
        with duckdb.connect(":memory:") as duck:
            duck.execute("SET enable_progress_bar = false")
            create_lake_views(duck, ds)
            for view, columns, path in (("events", event_columns, events_csv),
                                        ("profiles", profile_columns, profiles_csv)):
                select = ", ".join(f'"{c}"' for c in columns)
                duck.execute(f"COPY (SELECT {select} FROM {view}) TO '{path}' (FORMAT csv, HEADER false)")
                path.chmod(0o644)
        exported = time.perf_counter()
        base_events = ["tenant_id bigint NOT NULL", "user_id text NOT NULL", "event_type text NOT NULL",
                       "occurred_at timestamp NOT NULL", "event_date date NOT NULL"]
        events_ddl = base_events + [f'"{col}" {_SQL_TYPES[kind]}' for col, kind in properties]
        profiles_ddl = ["tenant_id bigint NOT NULL", "user_id text NOT NULL",
                        *(f'"{col}" {_SQL_TYPES[kind]}' for col, kind in traits)]
        with self.con.transaction():  # table created in the COPY's transaction: no WAL (wal_level=minimal)
            self.con.execute(f"CREATE TABLE events ({', '.join(events_ddl)})")
            self.con.execute(f"CREATE TABLE profiles ({', '.join(profiles_ddl)})")
            self.con.execute(f"COPY events FROM '{events_csv}' (FORMAT csv)")
            self.con.execute(f"COPY profiles FROM '{profiles_csv}' (FORMAT csv)")
        copied = time.perf_counter()
        for ddl in INDEXES:
            self.con.execute(ddl)
        indexed = time.perf_counter()
        self.con.execute("VACUUM ANALYZE events")
        self.con.execute("VACUUM ANALYZE profiles")
        analyzed = time.perf_counter()
        events_csv.unlink()
        profiles_csv.unlink()
        loaded = self.con.execute("SELECT count(*) FROM events").fetchone()[0]
        if loaded != ds.snapshot.rows:
            raise RuntimeError(f"PostgreSQL loaded {loaded} events, the lake holds {ds.snapshot.rows}")
        self.context = SqlContext(ds, "postgres")
        self.backend_pid = self.con.execute("SELECT pg_backend_pid()").fetchone()[0]
        return {"export_csv_s": exported - started, "copy_s": copied - exported,
                "index_s": indexed - copied, "vacuum_analyze_s": analyzed - indexed, "load_total_s": analyzed - started}

    # -- queries -------------------------------------------------------------------------
    def memory_pid(self) -> int:
        """The backend serving our connection (parallel workers are separate processes)."""
        return self.backend_pid
