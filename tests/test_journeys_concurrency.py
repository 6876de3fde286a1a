"""Three workers (each with its own Runtime, as separate processes would have) advance the same
journey runs and hand off the same sends at once: every (run, step) happens exactly once and
every recipient gets exactly the emails its path calls for."""
from __future__ import annotations

import time
from collections import Counter

from engine.runtime import Runtime
from engagement.worker import SendWorker
from engine.settings import Settings
from tests.sends_fixtures import make_template, outbox_headers, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]


def test_concurrent_workers_do_each_step_once(client, tenants, runtime, data_dir):
    a = tenants.a
    users = {f"u{i:03d}": {"email": f"u{i:03d}@example.com", "tier": i % 2} for i in range(60)}
    profiles(runtime, a.tenant_id, users)
    t1 = make_template(client, a.headers, name="one", subject="one")
    t2 = make_template(client, a.headers, name="two", subject="two")
    t3 = make_template(client, a.headers, name="three", subject="three")
    journey = client.post("/api/journeys/", json={
        "name": "Drip", "status": "active", "trigger": {"type": "api"},
        "steps": [{"id": "s1", "type": "send_email", "templateId": t1["id"]},
                  {"id": "w", "type": "wait", "duration": {"seconds": 1}},
                  {"id": "s2", "type": "send_email", "templateId": t2["id"]},
                  {"id": "b", "type": "branch", "condition": {"type": "trait", "trait": "tier", "value": 1},
                   "then": "s3", "else": None},
                  {"id": "s3", "type": "send_email", "templateId": t3["id"]}]}, headers=a.headers).json()
    for user in users:
        assert client.post(f"/api/journeys/{journey['id']}/trigger/", json={"userId": user},
                           headers=a.headers).status_code == 202

    runtimes = [Runtime(Settings(data_dir=data_dir, run_workers=False, send_chunk=7))
                for _ in range(3)]
    workers = [SendWorker(rt.sends, poll=0.05) for rt in runtimes]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while runtime.meta.query_one("SELECT count(*) FROM journey_runs WHERE status = 'active'")[0] or \
                runtime.meta.query_one("SELECT count(*) FROM email_sends WHERE status IN ('queued', 'handing_off')")[0]:
            assert time.monotonic() < deadline, "workers did not finish"
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.stop()
        for rt in runtimes:
            rt.stop()

    expected = Counter()
    for user, traits in users.items():
        expected[(traits["email"], "one")] += 1
        expected[(traits["email"], "two")] += 1
        if traits["tier"] == 1:
            expected[(traits["email"], "three")] += 1
    delivered = Counter(outbox_headers(data_dir))
    assert delivered == expected
    assert runtime.meta.query_one("SELECT count(*) FROM email_sends WHERE status = 'sent'")[0] == sum(expected.values())
    steps = runtime.meta.query_one("SELECT count(*) FROM journey_run_steps")[0]
    assert steps == 60 * 4 + 30  # s1, w, s2, b for everyone; s3 for tier 1
    assert runtime.meta.query_one("SELECT count(*) FROM journey_runs WHERE status = 'completed'")[0] == 60
