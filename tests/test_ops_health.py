"""GET /healthz and GET /readyz through the real app: unauthenticated, no tenant data, and a 503
naming the check when the metadata DB, the lake or the WAL directory cannot be written or a
background worker died. (Tests run as root, where permission bits stop nothing, so a directory is
made unwritable by putting a file where it was.)"""
from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings

pytest_plugins = ["tests.api_fixtures"]

CHECKS = {"metadata", "lake", "wal", "workers"}


@pytest.fixture
def served(data_dir):
    """The app as `segops serve` runs it: background workers started by the lifespan."""
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=True))
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        yield client, runtime


@contextmanager
def _replaced_by_a_file(path: Path):
    """``path`` (a directory or the DB file) moved aside and a non-directory put in its place."""
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    if aside.is_dir():
        path.write_text("not a directory")
    else:
        path.mkdir()  # a directory where the database file was
    try:
        yield
    finally:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        aside.rename(path)


def test_healthz_answers_without_credentials(client):
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_is_ready_with_every_check_passing_and_names_no_tenant(served, tenant_a):
    client, runtime = served
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": dict.fromkeys(CHECKS, "ok")}
    assert tenant_a.name not in r.text and tenant_a.email not in r.text
    # the workers checked are the ones the lifespan started
    assert {t.name for t in runtime.workers} >= {"segops-wal-commit", "segops-flusher", "segops-compute",
                                                 "segops-exports", "segops-send-worker", "segops-lake-maintenance"}


def test_readyz_without_background_workers_skips_that_check(client):
    assert client.get("/readyz").json()["checks"]["workers"] == "skipped"


@pytest.mark.parametrize("check, where", [
    ("wal", lambda s: s.wal_dir),
    ("lake", lambda s: Path(s.lake_root)),
    ("metadata", lambda s: s.metadata_path),
])
def test_readyz_is_503_naming_the_check_that_cannot_write(served, check, where):
    client, runtime = served
    with _replaced_by_a_file(where(runtime.settings)):
        r = client.get("/readyz")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["code"] == "not_ready" and check in body["detail"]
    assert body["checks"][check].startswith("failed:")
    assert body[check] == [body["checks"][check]]
    assert {name for name, result in body["checks"].items() if result != "ok"} == {check}
    assert str(runtime.settings.data_dir) not in r.text  # unauthenticated: no paths
    assert client.get("/readyz").status_code == 200  # restored


def test_readyz_is_503_when_a_worker_thread_died(served):
    client, runtime = served
    finished = threading.Thread(target=lambda: None, name="segops-test-worker")
    finished.start()
    finished.join()
    runtime.add_worker(finished)
    body = client.get("/readyz").json()
    assert body["code"] == "not_ready"
    assert body["checks"]["workers"] == "failed: not running: segops-test-worker"

