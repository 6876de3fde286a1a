"""Sends as ``send`` jobs (engine.jobs): one job per chunk of a broadcast, a tenant's journey sends
batched into one queued job, and a worker that lost its job's lease hands nothing off (the job's
next holder settles the chunk by recovery, so each message goes out once)."""
from __future__ import annotations

from datetime import timedelta

from common.time import utc_now
from engagement.outbound import KIND, NewSend
from tests.sends_fixtures import make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]


def _content(runtime, client, tenant):
    template = make_template(client, tenant.headers, purpose="transactional")
    return runtime.sends.snapshot(tenant.tenant_id, template["id"])[0]


def _journey_send(runtime, tenant_id, content_id, key):
    [send_id] = runtime.sends.outbound.enqueue([NewSend(tenant_id, "journey", key, content_id,
                                                        to_address=f"{key}@example.com")])
    return runtime.meta.query_one("SELECT job_id FROM email_sends WHERE id = ?", (send_id,))[0]


def test_a_broadcast_queues_one_job_per_chunk(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, {f"u{i}": {"email": f"u{i}@example.com"} for i in range(7)})
    template = make_template(client, a.headers)
    runtime.sends.outbound.chunk = 3
    everyone = {"logic": "AND", "conditions": [{"type": "trait", "trait": "email", "operator": "is_set"}]}
    body = {"templateId": template["id"], "audience": {"definition": everyone}}
    broadcast = client.post("/api/broadcasts/", json=body, headers=a.headers).json()
    per_job = [n for _, n in runtime.meta.query(
        "SELECT job_id, count(*) FROM email_sends WHERE source = 'broadcast' GROUP BY job_id ORDER BY job_id")]
    assert per_job == [3, 3, 1]
    jobs = runtime.meta.query("SELECT kind, status, trigger FROM jobs WHERE kind = ?", (KIND,))
    assert [tuple(j) for j in jobs] == [("send", "queued", "broadcast")] * 3
    while runtime.sends.dispatcher.run_once():
        pass
    assert sorted(m["To"] for m in outbox(data_dir)) == [f"u{i}@example.com" for i in range(7)]
    assert {j["status"] for j in runtime.meta.query("SELECT status FROM jobs WHERE kind = ?", (KIND,))} == {"done"}
    assert client.get(f"/api/broadcasts/{broadcast['id']}/", headers=a.headers).json()["status"] == "sent"


def test_journey_sends_of_a_tenant_share_its_queued_job(client, tenants, runtime):
    a, b = tenants.a, tenants.b
    content_a, content_b = _content(runtime, client, a), _content(runtime, client, b)
    first = {_journey_send(runtime, a.tenant_id, content_a, f"r{i}:s") for i in range(3)}
    assert len(first) == 1
    assert _journey_send(runtime, b.tenant_id, content_b, "r9:s") not in first  # another tenant's job
    assert runtime.sends.dispatcher.run_once() == 3  # one chunk
    later = _journey_send(runtime, a.tenant_id, content_a, "r3:s")
    assert later not in first  # the first one was taken: a new job


def test_a_worker_that_lost_its_lease_hands_off_nothing(client, tenants, runtime, data_dir):
    a = tenants.a
    content_id = _content(runtime, client, a)
    sends = runtime.sends
    sends.outbound.enqueue([NewSend(a.tenant_id, "api", f"k{i}", content_id, to_address=f"k{i}@example.com")
                            for i in range(2)])
    rows = sends.outbound.claim("stalled-worker", timedelta(seconds=-1), 10)  # its lease lapses at once ...
    assert sends.dispatcher.recover() == 2  # ... another worker takes the job over and re-queues both
    stalled = sends.dispatcher
    items = [stalled._render(a.tenant_id, row, stalled._content(content_id), {}, row["to_address"], utc_now())
             for row in rows]
    assert [type(e).__name__ for e in stalled.hand_off(items)] == ["LeaseLost", "LeaseLost"]
    assert not (data_dir / "outbox").exists() or outbox(data_dir) == []
    while sends.dispatcher.run_once():
        pass
    assert sorted(m["To"] for m in outbox(data_dir)) == ["k0@example.com", "k1@example.com"]
    attempts = [r[0] for r in runtime.meta.query("SELECT attempts FROM email_sends ORDER BY id")]
    assert attempts == [2, 2]
