"""Helpers for ingest tests: raw posts, reading the lake back through DuckDB, extra runtimes."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings
from storage import duck


def post(client: TestClient, headers: dict, body, path: str = "/api/events/"):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers={**headers, "Content-Type": "application/json"})


def lake_rows(runtime: Runtime, tenant_id: int) -> list[dict]:
    """Every committed event of a tenant, read from the lake snapshot with DuckDB."""
    snapshot = runtime.lake.snapshot(tenant_id)
    if not snapshot.files:
        return []
    con = duck.connect(runtime.lake.store)
    try:
        cur = con.execute("SELECT event_id, tenant_id, user_id, event_type, occurred_at, received_at, properties "
                          "FROM read_parquet(?, hive_partitioning=true, union_by_name=true) ORDER BY event_id",
                          [list(snapshot.files)])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def event_ids(runtime: Runtime, tenant_id: int) -> list[str]:
    return [row["event_id"] for row in lake_rows(runtime, tenant_id)]


@contextmanager
def serving(data_dir: Path, run_workers: bool = False, **settings):
    """A second app on ``data_dir`` (a restart), stopped on exit."""
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=run_workers, **settings))
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        yield runtime, client
    runtime.meta.close()
