"""Kill -9 the real server again and again while a client streams events; every event
the client got acknowledged (it retries until it does) is in the lake exactly once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from engine.runtime import Runtime
from engine.settings import Settings
from storage import duck
from tests.storage_fixtures import free_port

TOTAL, BATCH = 200_000, 500
SEGOPS = str(Path(sys.executable).with_name("segops"))
REPO = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, data_dir: Path, port: int, log: Path):
        self.data_dir, self.port, self.log = data_dir, port, log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [SEGOPS, "--data", str(self.data_dir), "serve", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Client(threading.Thread):
    """Sends batches of fixed event ids in order, retrying each until it is acknowledged."""

    def __init__(self, port: int, api_key: str):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/events/"
        self.headers = {"Authorization": f"ApiKey {api_key}", "Content-Type": "application/json"}
        self.acked = 0
        self.accepted = self.duplicates = self.retries = 0
        self.error: str | None = None

    def run(self) -> None:
        with httpx.Client(timeout=10.0) as http:
            for start in range(0, TOTAL, BATCH):
                body = orjson.dumps({"batch": [
                    {"event_id": f"crash-{i}", "user_id": f"u-{i % 997}", "event_type": "tick",
                     "properties": {"i": i}} for i in range(start, start + BATCH)]})
                while True:
                    try:
                        r = http.post(self.url, content=body, headers=self.headers)
                    except httpx.TransportError:
                        self.retries += 1
                        time.sleep(0.05)
                        continue
                    if r.status_code == 202:
                        break
                    if r.status_code != 503:
                        self.error = f"{r.status_code}: {r.text}"
                        return
                    self.retries += 1
                    time.sleep(0.1)
                result = r.json()
                self.accepted += result["accepted"]
                self.duplicates += result["duplicates"]
                self.acked += BATCH


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_acknowledged_events_survive_repeated_kill_9(tmp_path):
    data_dir = tmp_path / "data"
    setup = Runtime(Settings(data_dir=data_dir, run_workers=False))
    tenant_id = setup.accounts.create_tenant("Crash", plan="enterprise")
    _, api_key = setup.accounts.create_api_key(tenant_id, "crash", ["events:write"])
    setup.meta.close()

    server = Server(data_dir, free_port(), tmp_path / "server.log")
    client = Client(server.port, api_key)
    rng = random.Random(20261124)
    server.start()
    client.start()
    # Kill points are progress, not time, so a fast machine cannot finish between kills: each
    # kill lands once the client has had that many events acknowledged by the live incarnation.
    kill_points = sorted(rng.sample(range(TOTAL // 10, TOTAL * 9 // 10, BATCH), 5))
    kills = 0
    try:
        for point in kill_points:
            while client.acked < point and client.is_alive():
                time.sleep(0.005)
                if server.proc.poll() is not None:
                    pytest.fail("server exited by itself:\n" + server.log.read_text(errors="replace")[-3000:])
            if not client.is_alive():
                break
            server.kill()
            kills += 1
            server.start()
        client.join()
    finally:
        server.kill()  # the last incarnation dies with -9 too
    log = (tmp_path / "server.log").read_text(errors="replace")[-3000:]
    assert client.error is None, client.error + log
    assert client.acked == TOTAL
    assert kills >= 3, f"only {kills} kills landed; server log:\n{log}"

    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False))
    runtime.ingest.flush_now()  # replays what the last incarnation had not flushed
    snapshot = runtime.lake.snapshot(tenant_id)
    con = duck.connect(runtime.lake.store)
    total, distinct, lo, hi = con.execute(
        "SELECT count(*), count(DISTINCT event_id), min(CAST(json_extract(properties, '$.i') AS BIGINT)), "
        "max(CAST(json_extract(properties, '$.i') AS BIGINT)) FROM read_parquet(?)",
        [list(snapshot.files)]).fetchone()
    missing = con.execute(
        "SELECT count(*) FROM range(?) r(i) ANTI JOIN read_parquet(?) e ON e.event_id = 'crash-' || r.i",
        [TOTAL, list(snapshot.files)]).fetchone()[0]
    con.close()
    runtime.stop()
    print(f"{kills} kills, {client.retries} retried requests, {client.duplicates} events acknowledged "
          f"as duplicates of an earlier unacknowledged attempt")
    assert missing == 0
    assert (total, distinct, lo, hi) == (TOTAL, TOTAL, 0, TOTAL - 1)
    assert client.accepted <= TOTAL and client.accepted + client.duplicates >= TOTAL
