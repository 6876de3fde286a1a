"""``segops worker --kinds``: the job workers without HTTP, in a real subprocess, stopped by SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.runtime import Runtime
from engine.settings import Settings
from tests.membership_fixtures import add_events, create_segment, frequency

SEGOPS = Path(sys.executable).with_name("segops")
REPO = Path(__file__).resolve().parents[1]


def _worker(data_dir: Path, *args: str) -> subprocess.Popen:
    # PYTHONPATH: the console script must import this checkout's packages wherever it runs.
    env = dict(os.environ, PYTHONPATH=str(REPO), SEGOPS_QUERY_BACKEND="duckdb")
    return subprocess.Popen([str(SEGOPS), "--data", str(data_dir), "worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)


def _until(check, proc: subprocess.Popen, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        assert proc.poll() is None, f"the worker exited while waiting for {what}:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.1)
    return found


def test_worker_runs_compute_and_export_jobs_and_stops_on_sigterm(tmp_path):
    data_dir = tmp_path / "data"
    runtime = Runtime(Settings(_env_file=None, data_dir=data_dir, run_workers=False))
    tenant_id = runtime.accounts.create_tenant("w", plan="enterprise")
    add_events(runtime, tenant_id, [(f"u{i}", "buy", {}) for i in range(4)] + [("x", "view", {})])
    segment = create_segment(runtime, tenant_id, frequency("buy"))
    job_id = runtime.compute.enqueue(tenant_id, segment, "cli")
    proc = _worker(data_dir, "--kinds", "compute,export")
    try:
        job = _until(lambda: (j := runtime.compute.get_job(tenant_id, job_id))["status"] in ("done", "failed")
                     and j or None, proc, "finished computation")
        assert (job["status"], job["member_count"]) == ("done", 4), job
        export_id = runtime.exports.create(tenant_id, segment, "csv", trigger="cli")["export_id"]
        export = _until(lambda: (e := runtime.exports.get(tenant_id, export_id))["status"] in ("done", "failed")
                        and e or None, proc, "finished export")
        assert (export["status"], export["row_count"]) == ("done", 4), export
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "compute backend=duckdb" in output and "export backend=duckdb" in output
    assert "transport=" not in output  # no send worker was asked for
    runtime.stop()


def test_worker_refuses_an_unknown_kind(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc = _worker(data_dir, "--kinds", "compute,sync")
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2 and "--kinds takes compute, export, send, not 'compute,sync'" in output
