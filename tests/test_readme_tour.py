"""The README's five-minute tour, run verbatim with bash against a real `segops serve` (a subprocess on a
free port, over a fresh data dir with demo data), and what a first run meets around it: the server's
port in email links, a second server on the same data dir, a data dir that `serve` creates."""
from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import time
from email import policy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.sends_fixtures import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SEGOPS = [sys.executable, "-c", "from cli.app import main; main()"]


def tour_script() -> str:
    """The bash blocks of the README's "Five-minute tour" section, as they are."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "no bash block in the tour"
    return "\n".join(blocks)


def answers(stdout: str) -> list:
    """The JSON documents curl printed one after the other (without separators)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(stdout) and stdout[at].isspace():
            at += 1
        if at == len(stdout):
            return out
        value, at = decoder.raw_decode(stdout, at)
        out.append(value)


def env(**extra: str) -> dict[str, str]:
    """The test's environment without SEGOPS_* (the servers get theirs explicitly); the venv's
    python3 first on PATH, as in a shell where it is activated."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGOPS_")}
    return {**clean, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}", **extra}


@contextmanager
def serving(root: Path, data: Path) -> Iterator[tuple[str, int]]:
    """``segops serve`` on ``data`` (log in ``root/serve.log``) on a free port, until the block ends:
    (base URL, port), once it answers."""
    port = free_port()
    log = root / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([*SEGOPS, "--data", str(data), "serve", "--port", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env())
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server, log)
        yield base, port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_up(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError("segops serve exited:\n" + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"{base}/docs", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("segops serve did not answer within 60 s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(working dir holding data/, base URL, port): a fresh data dir with demo data, served."""
    root = tmp_path_factory.mktemp("tour")
    data = root / "data"
    demo = subprocess.run([*SEGOPS, "--data", str(data), "demo-data", "--users", "100", "--events", "5000"],
                          capture_output=True, text=True, timeout=120, cwd=root, env=env())
    assert demo.returncode == 0, demo.stderr
    with serving(root, data) as (base, port):
        yield root, base, port


def test_the_readme_tour_runs_as_a_script(served):
    root, base, _ = served
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", tour_script()], capture_output=True, text=True,
                         timeout=90, cwd=root, env=env(API=base))
    assert run.returncode == 0, f"the tour failed:\n{run.stderr}\n{run.stdout[-3000:]}"
    creds = json.loads((root / "data" / "demo-credentials.json").read_text())
    (me, accepted, identified, patched, preview, job, jobs, membership, members, export, versions, schema,
     profile) = answers(run.stdout)
    assert me["tenant_id"] == creds["tenant_id"] and me["user_id"] and me["api_key_id"] is None  # the JWT
    assert accepted["accepted"] == 2 and identified["accepted"] == 1
    segment_id = patched["id"]
    assert patched["version"] == 1 and patched["definition"]["logic"] == "AND"  # the first definition
    assert preview["matched_users"] >= len(preview["sample_user_ids"]) and "SELECT" in preview["sql"].upper()
    assert (job["status"], job["segment_id"]) == ("done", segment_id) and job["member_count"] >= 1
    assert jobs["results"][0]["job_id"] == job["job_id"]
    assert membership["user_id"] == "u-1" and segment_id in membership["segment_ids"]
    assert "u-1" in [m["user_id"] for m in members["results"]] and members["count"] == job["member_count"]
    assert export["status"] == "done" and export["row_count"] == job["member_count"]
    downloaded = pq.read_table(root / "members.parquet").column("user_id").to_pylist()
    assert len(downloaded) == job["member_count"] and "u-1" in downloaded
    assert versions["count"] == 1 and "$schema" in schema
    assert profile["traits"]["country"] == "DE"


def test_email_links_point_at_the_port_served(served):
    root, base, port = served
    key = json.loads((root / "data" / "demo-credentials.json").read_text())["api_key"]
    headers = {"Authorization": f"ApiKey {key}"}
    template = httpx.post(f"{base}/api/templates/", headers=headers, json={
        "name": "Port", "subject": "Hi", "purpose": "marketing", "text": "Hi",
        "html": '<html><body><p>Hi</p><a href="https://shop.example/x">Shop</a></body></html>'})
    assert template.status_code == 201, template.text
    sent = httpx.post(f"{base}/api/emails/", headers=headers, json={"templateId": template.json()["id"],
                                                                     "to": "port@example.com"})
    assert sent.status_code == 201, sent.text
    [path] = [p for p in (root / "data" / "outbox").glob("*.eml") if b"port@example.com" in p.read_bytes()]
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["List-Unsubscribe"].startswith(f"<http://127.0.0.1:{port}/api/recipients/unsubscribe/")
    html = message.get_body(("html",)).get_content()
    links = re.findall(r'(?:href|src)="(http://[^"]+)"', html)
    assert links and all(link.startswith(f"http://127.0.0.1:{port}/api/recipients/") for link in links), links
    assert any("/click/" in link for link in links) and any("/open/" in link for link in links)


def test_a_second_server_on_the_same_data_dir_says_why_it_stops(served):
    root, _, _ = served
    second = subprocess.run([*SEGOPS, "--data", str(root / "data"), "serve", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60, cwd=root, env=env())
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: another segops process already serves {root / 'data'} (its write-ahead log is locked); "
        "stop it, or serve another --data directory"]


def test_serve_says_it_created_the_data_dir(tmp_path):
    data = tmp_path / "fresh"
    server = subprocess.Popen([*SEGOPS, "--data", str(data), "serve", "--port", str(free_port())],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env())
    try:
        first = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first.strip() == f"created data directory {data.resolve()}"
    assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700
