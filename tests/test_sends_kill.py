"""Kill tests: a ``segops worker`` subprocess is ``kill -9``'d repeatedly in the middle of a
broadcast and of journeys; after restarts every recipient got exactly the emails it should
(the outbox transport makes "missed" and "twice" exactly checkable)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.sends_fixtures import make_template, outbox_by_message_id, outbox_headers, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

SEGOPS = Path(sys.executable).with_name("segops")
REPO = Path(__file__).resolve().parents[1]


def _outbox_count(data_dir: Path) -> int:
    directory = data_dir / "outbox"
    if not directory.exists():
        return 0
    return sum(1 for entry in os.scandir(directory) if entry.name.endswith(".eml"))


def _start_worker(data_dir: Path, log: Path) -> subprocess.Popen:
    # PYTHONPATH: the console script must import this checkout's packages wherever it runs.
    env = dict(os.environ, SEGOPS_SEND_LEASE_SECONDS="1", SEGOPS_SEND_CHUNK="200", PYTHONPATH=str(REPO))
    with open(log, "ab") as out:
        return subprocess.Popen([str(SEGOPS), "--data", str(data_dir), "worker", "--poll", "0.05"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


# A worker that changes nothing for this long is stuck. Slow is not a failure: on a loaded machine (a
# parallel run, other jobs) the worker can take ten times as long as alone, and the former fixed
# budgets (60 s to each kill point, 90 s to the end) then failed a correct run.
STALL_SECONDS = 120.0


def _progress(runtime, data_dir: Path) -> tuple:
    """What a working worker changes: delivered files, settled sends, recorded journey steps."""
    meta = runtime.meta
    sends = tuple(tuple(row) for row in meta.query("SELECT status, count(*) FROM email_sends GROUP BY 1"))
    journeys = meta.query_one("SELECT 1 FROM sqlite_master WHERE name = 'journey_run_steps'") is not None
    steps = meta.query_one("SELECT count(*) FROM journey_run_steps")[0] if journeys else 0
    return _outbox_count(data_dir), sends, steps


def _log_tail(log: Path) -> str:
    return "\n".join(line for line in log.read_text().splitlines() if "recovered hand-off" not in line)[-2000:]


def _wait(runtime, data_dir: Path, proc: subprocess.Popen, log: Path, until, what: str) -> None:
    """Poll ``until()``; fail if the worker exits or makes no progress for STALL_SECONDS."""
    state, moved, checked = None, time.monotonic(), 0.0
    while not until():
        assert proc.poll() is None, f"worker exited on its own while waiting for {what}:\n{_log_tail(log)}"
        now = time.monotonic()
        if now - checked >= 1.0:
            checked = now
            if (current := _progress(runtime, data_dir)) != state:
                state, moved = current, now
            assert now - moved < STALL_SECONDS, (f"no progress for {STALL_SECONDS:.0f} s waiting for {what} "
                                                 f"(outbox, sends, steps: {state}):\n{_log_tail(log)}")
        time.sleep(0.005)


def _run_with_kills(runtime, data_dir: Path, tmp_path: Path, kill_points: list[int], done) -> None:
    log = tmp_path / "worker.log"
    for point in kill_points:
        proc = _start_worker(data_dir, log)
        try:
            _wait(runtime, data_dir, proc, log, lambda point=point: _outbox_count(data_dir) >= point,
                  f"{point} messages")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    proc = _start_worker(data_dir, log)
    try:
        _wait(runtime, data_dir, proc, log, done, "the work to finish after the last restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _assert_recorded_as_delivered(runtime, data_dir: Path) -> None:
    """Every send, the recovered ones too, records the recipient and subject that went out (so a
    bounce naming its Message-ID finds the address)."""
    rows = runtime.meta.query("SELECT message_id, to_address, subject FROM email_sends")
    assert {r["message_id"]: (r["to_address"], r["subject"]) for r in rows} == outbox_by_message_id(data_dir)


def _pending(runtime) -> int:
    return runtime.meta.query_one("SELECT count(*) FROM email_sends WHERE status IN ('queued', 'handing_off')")[0]


@pytest.mark.slow
def test_broadcast_survives_kill_9_without_duplicates_or_misses(client, tenants, runtime, data_dir, tmp_path):
    a = tenants.a
    users = {f"u{i:05d}": {"email": f"u{i:05d}@example.com", "n": i} for i in range(2000)}
    profiles(runtime, a.tenant_id, users)
    template = make_template(client, a.headers, subject="Hi {{ n }}")
    everyone = {"logic": "AND", "conditions": [{"type": "trait", "trait": "email", "operator": "is_set"}]}
    r = client.post("/api/broadcasts/", json={"templateId": template["id"], "audience": {"definition": everyone}},
                    headers=a.headers)
    assert r.status_code == 202 and r.json()["audienceSize"] == 2000

    # Kill points fall inside a chunk of 200 (SEGOPS_SEND_CHUNK), not at its end, where a kill after the
    # chunk settled would leave nothing to recover.
    _run_with_kills(runtime, data_dir, tmp_path, [250, 870, 1430], lambda: _pending(runtime) == 0)

    # The kills landed inside hand-offs: the restarted workers had claimed rows to settle.
    assert "recovered hand-off" in (tmp_path / "worker.log").read_text()

    delivered = Counter(to for to, _ in outbox_headers(data_dir))
    assert set(delivered) == {t["email"] for t in users.values()}   # nobody missed
    assert max(delivered.values()) == 1                              # nobody twice
    states = dict(runtime.meta.query("SELECT status, count(*) FROM email_sends GROUP BY status"))
    assert states == {"sent": 2000}
    _assert_recorded_as_delivered(runtime, data_dir)
    progress = client.get(f"/api/broadcasts/{r.json()['id']}/", headers=a.headers).json()
    assert progress["status"] == "sent" and progress["progress"]["sentCount"] == 2000


@pytest.mark.slow
def test_journeys_survive_kill_9_without_duplicates_or_misses(client, tenants, runtime, data_dir, tmp_path):
    a = tenants.a
    users = {f"j{i:04d}": {"email": f"j{i:04d}@example.com"} for i in range(400)}
    profiles(runtime, a.tenant_id, users)
    first = make_template(client, a.headers, name="first", subject="first")
    second = make_template(client, a.headers, name="second", subject="second")
    journey = client.post("/api/journeys/", json={
        "name": "Two-step", "status": "active", "trigger": {"type": "event", "eventType": "signup"},
        "steps": [{"id": "a", "type": "send_email", "templateId": first["id"]},
                  {"id": "w", "type": "wait", "duration": {"seconds": 1}},
                  {"id": "b", "type": "send_email", "templateId": second["id"]}]}, headers=a.headers).json()
    r = client.post("/api/events/", json={"batch": [{"user_id": u, "event_type": "signup"} for u in users]},
                    headers=a.headers)
    assert r.json() == {"accepted": 400, "duplicates": 0, "journeys_matched": 1}
    assert client.get(f"/api/journeys/{journey['id']}/", headers=a.headers).json()["stats"]["activeRuns"] == 400

    def finished() -> bool:
        active = runtime.meta.query_one("SELECT count(*) FROM journey_runs WHERE status = 'active'")[0]
        return active == 0 and _pending(runtime) == 0

    _run_with_kills(runtime, data_dir, tmp_path, [120, 390, 610], finished)

    delivered = Counter(outbox_headers(data_dir))
    expected = Counter({(t["email"], s): 1 for t in users.values() for s in ("first", "second")})
    assert delivered == expected
    assert runtime.meta.query_one("SELECT count(*) FROM journey_runs WHERE status = 'completed'")[0] == 400
    assert runtime.meta.query_one("SELECT count(*) FROM journey_run_steps")[0] == 400 * 3
    _assert_recorded_as_delivered(runtime, data_dir)
