"""Access logs of a real ``segops serve`` process: one structured line per request (method, route
template, status, duration, tenant, request id), JSON or text, and never a credential or a query
string, whatever the client sends."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.sends_fixtures import free_port

pytest_plugins = ["tests.api_fixtures"]

SEGOPS = Path(sys.executable).with_name("segops")
REPO = Path(__file__).resolve().parents[1]
PROBE = "startup-probe"  # the request id of the waits for the server to answer


def _serve(data_dir: Path, args: list[str], env: dict[str, str], stderr: Path):
    port = free_port()
    # PYTHONPATH: the console script must import this checkout's packages wherever it runs.
    proc = subprocess.Popen([str(SEGOPS), "--data", str(data_dir), "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=stderr.open("wb"),
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", headers={"X-Request-ID": PROBE}, timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"segops serve did not start: {stderr.read_text()}")
        time.sleep(0.1)


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _traffic(base: str, tenant) -> dict[str, httpx.Response]:
    """Requests that carry secrets every way a client might: header, query string, wrong key, JWT."""
    key = tenant.api_key
    jwt = tenant.jwt_headers()["Authorization"].split(" ", 1)[1]
    with httpx.Client(base_url=base, timeout=30) as http:
        return {
            "lookup": http.get(f"/api/segments/membership/?user_id=u-1&api_key={key}",
                               headers={"x-api-key": key, "X-Request-ID": "client-req.42"}),
            "list": http.get(f"/api/segments/?token={jwt}", headers={"Authorization": f"Bearer {jwt}"}),
            "track": http.post("/api/events/", json={"user_id": "u-1", "event_type": "page_viewed"},
                               headers={"Authorization": f"ApiKey {key}"}),
            "bad_key": http.get("/api/segments/", headers={"Authorization": "ApiKey sk_live_not-a-real-key-123"}),
            "odd_request_id": http.get("/healthz", headers={"X-Request-ID": "has spaces & " + "x" * 200}),
            "too_large": http.post("/api/segments/", content=iter([b" " * (1 << 20), b" " * (1 << 20)]),
                                   headers={"Authorization": f"ApiKey {key}", "Content-Type": "application/json"}),
            "metrics": http.get("/metrics"),  # a loopback client: allowed without a token by default
        }


def _assert_no_secrets(log: str, tenant) -> None:
    jwt = tenant.jwt_headers()["Authorization"].split(" ", 1)[1]
    for secret in (tenant.api_key, jwt, jwt.split(".")[2], "sk_live_not-a-real-key-123", "api_key=", "token="):
        assert secret not in log


def test_json_access_log_has_one_structured_line_per_request_and_no_secrets(data_dir, tenant_a, tmp_path):
    stderr = tmp_path / "serve.err"
    proc, base = _serve(data_dir, ["--log-format", "json"], {}, stderr)
    try:
        responses = _traffic(base, tenant_a)
    finally:
        _stop(proc)
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {"lookup": 200, "list": 200, "track": 202, "bad_key": 401, "odd_request_id": 200,
                        "too_large": 413, "metrics": 200}
    log = stderr.read_text()
    lines = [orjson.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    access = [line for line in lines if line["logger"] == "segops.access" and line["request_id"] != PROBE]
    by_id = {line["request_id"]: line for line in access}
    assert len(access) == len(responses) == len(by_id)
    for name, r in responses.items():
        line = by_id[r.headers["x-request-id"]]
        assert line["status"] == r.status_code and line["method"] == r.request.method
        assert line["duration_ms"] >= 0 and line["level"] == "INFO" and re.match(r"\d{4}-\d\d-\d\dT", line["ts"])
    assert responses["lookup"].headers["x-request-id"] == "client-req.42"  # a client's id is kept and echoed
    assert re.fullmatch(r"[0-9a-f]{16}", responses["odd_request_id"].headers["x-request-id"])  # replaced
    lookup = by_id["client-req.42"]
    assert (lookup["route"], lookup["tenant_id"]) == ("/api/segments/membership/", tenant_a.tenant_id)
    assert by_id[responses["track"].headers["x-request-id"]]["route"] == "/api/events/"
    assert by_id[responses["bad_key"].headers["x-request-id"]]["tenant_id"] is None
    assert by_id[responses["metrics"].headers["x-request-id"]]["route"] == "/metrics"
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # the server's own lines, same format
    _assert_no_secrets(log, tenant_a)


def test_text_access_log_from_the_setting(data_dir, tenant_a, tmp_path):
    stderr = tmp_path / "serve.err"
    proc, base = _serve(data_dir, [], {"SEGOPS_LOG_FORMAT": "text"}, stderr)
    try:
        responses = _traffic(base, tenant_a)
    finally:
        _stop(proc)
    log = stderr.read_text()
    access = [line for line in log.splitlines() if " segops.access " in line and PROBE not in line]
    assert len(access) == len(responses)
    rid = responses["lookup"].headers["x-request-id"]
    [line] = [line for line in access if line.endswith(f"request_id={rid}")]
    assert re.fullmatch(r"\S+Z INFO segops\.access GET /api/segments/membership/ 200 [\d.]+ms "
                        rf"tenant={tenant_a.tenant_id} request_id={re.escape(rid)}", line)
    _assert_no_secrets(log, tenant_a)


def test_access_log_can_be_turned_off(data_dir, tenant_a, tmp_path):
    stderr = tmp_path / "serve.err"
    proc, base = _serve(data_dir, [], {"SEGOPS_ACCESS_LOG": "0"}, stderr)
    try:
        assert httpx.get(base + "/api/segments/", headers=tenant_a.headers).status_code == 200
    finally:
        _stop(proc)
    log = stderr.read_text()
    assert "segops.access" not in log and "Uvicorn running" in log
