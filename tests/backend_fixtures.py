"""Query backends over a real lake, for tests that must hold on every backend.

Use with ``pytest_plugins = ["tests.backend_fixtures"]``.

* ``backend_name``: parametrized over the backends under test (``BACKENDS``; Spark adds a slow
  parameter).
* ``backend_world``: a ``BackendWorld``: ``settings``, an ``EventLake`` in the test's data dir
  (``lake``) and the named backend from ``backends.registry.Backends`` (``backend``), closed
  afterwards. Write through ``lake`` (the real writer), then ``world.tenant_lake(tenant)``.

``lake_view`` / ``events_relation``: a snapshot registered on a plain DuckDB connection the
way the engine reads it (``backends.relations`` over DuckDB scans), for tests that query the
lake with SQL of their own.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pytest
from sqlglot import exp

from backends import relations
from backends.base import QueryBackend
from backends.duckdb import DuckDBBackend
from backends.registry import Backends
from compiler import to_sql
from engine.settings import Settings
from storage.lake import EventLake
from storage.objectstore import ObjectStore
from storage.snapshots import EventsSnapshot, ProfilesSnapshot
from tests.spark_fixtures import spark  # noqa: F401  (the session-wide Spark session, for the spark param)

BACKENDS = [pytest.param("duckdb", id="duckdb"), pytest.param("spark", id="spark", marks=pytest.mark.slow)]


@dataclass
class BackendWorld:
    settings: Settings
    lake: EventLake
    backends: Backends
    backend: QueryBackend

    def tenant_lake(self, tenant_id: int) -> relations.TenantLake:
        return self.backends.tenant_lake(tenant_id)


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    return request.param


@pytest.fixture
def backend_world(backend_name, tmp_path, request):
    if backend_name == "spark":  # first, so the registry's build_session finds the test session running
        request.getfixturevalue("spark")
    settings = Settings(data_dir=tmp_path / "data", run_workers=False, spark_master="local[2]")
    lake = EventLake.from_settings(settings)
    backends = Backends(settings, lake, interactive=backend_name, batch=backend_name)
    try:
        yield BackendWorld(settings, lake, backends, backends.get(backend_name))
    finally:
        backends.close()


def _relation(store: ObjectStore, snapshot: EventsSnapshot | ProfilesSnapshot) -> exp.Expression:
    backend = DuckDBBackend(store, store)
    try:
        if isinstance(snapshot, EventsSnapshot):
            return relations.events(backend.scans, snapshot, snapshot.entries)
        return relations.profiles(backend.scans, snapshot)
    finally:
        backend.close()


def events_relation(con: duckdb.DuckDBPyConnection, store: ObjectStore,
                    snapshot: EventsSnapshot | ProfilesSnapshot) -> duckdb.DuckDBPyRelation:
    """All rows of ``snapshot`` (events or profiles) as a relation on ``con``."""
    return con.sql(to_sql(exp.select(exp.Star()).from_(_relation(store, snapshot)), "duckdb"))


def lake_view(con: duckdb.DuckDBPyConnection, store: ObjectStore, snapshot: EventsSnapshot | ProfilesSnapshot,
              name: str | None = None) -> None:
    """Register ``snapshot`` on ``con`` as the view ``name`` (default ``events`` / ``profiles``)."""
    name = name or ("events" if isinstance(snapshot, EventsSnapshot) else "profiles")
    events_relation(con, store, snapshot).create_view(name, replace=True)
