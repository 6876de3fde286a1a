"""Shared pytest fixtures for anything that stores bytes: a real S3 server and object stores.

Use from any test module with::

    pytest_plugins = ["tests.storage_fixtures"]

Fixtures:

* ``s3_server`` (session): a real ``moto_server`` on a free 127.0.0.1 port, started once
  per test session and stopped at its end. Yields an ``S3Server`` with ``endpoint_url``,
  ``access_key_id``, ``secret_access_key``, ``region`` and ``bucket`` (already created),
  plus ``store(prefix=None, scratch=None)`` giving an ``S3ObjectStore`` under a fresh prefix
  and ``settings_overrides(prefix)`` for ``Settings.from_env(..., **overrides)``.
* ``object_store``: parametrized ``local`` | ``s3``; a fresh, empty store per test
  (local: ``tmp_path/lake``; S3: a unique prefix in the shared bucket).
* ``lake``: an ``EventLake`` over ``object_store`` (grace period 60 s).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.objectstore import LocalObjectStore, S3ObjectStore

MOTO_SERVER = Path(sys.executable).with_name("moto_server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    bucket: str
    scratch_root: Path

    def store(self, prefix: str | None = None, scratch: str | Path | None = None) -> S3ObjectStore:
        """A store under a fresh (or given) prefix of the shared bucket."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        return S3ObjectStore(self.bucket, prefix, endpoint_url=self.endpoint_url,
                             access_key_id=self.access_key_id, secret_access_key=self.secret_access_key,
                             region=self.region, scratch=scratch or self.scratch_root / prefix)

    def settings_overrides(self, prefix: str | None = None) -> dict:
        """Keyword overrides for ``engine.settings.Settings`` pointing the lake at this server."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        return {"lake_url": f"s3://{self.bucket}/{prefix}", "s3_endpoint_url": self.endpoint_url,
                "s3_access_key_id": self.access_key_id, "s3_secret_access_key": self.secret_access_key,
                "s3_region": self.region}


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start in time")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_ready(endpoint, proc)
        server = S3Server(endpoint, "testing", "testing", "us-east-1", "segops-test",
                          tmp_path_factory.mktemp("s3-scratch"))
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "lake")
    return request.getfixturevalue("s3_server").store(scratch=tmp_path / "scratch")


@pytest.fixture
def lake(object_store):
    from storage.lake import EventLake

    return EventLake(object_store, grace_seconds=60)
