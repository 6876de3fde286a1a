"""Transports and the hand-off protocol: MIME bytes parsed back by the stdlib, SMTP against a
real aiosmtpd server, transient failures, and recovery of hand-offs a dead worker left behind."""
from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from common.time import db_time, utc_now
from engine.runtime import Runtime
from engagement import mime
from engagement.outbound import NewSend
from engine.settings import Settings
from tests.sends_fixtures import free_port, make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=120).filter(str.strip)
body_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                    max_size=400)


@given(subject=header_text, name=header_text, text=body_text, html=body_text)
def test_mime_roundtrips_through_the_stdlib_parser(subject, name, text, html):
    data = mime.build_message(message_id="abc@segops.local", sender=mime.address(name, "from@example.com"),
                              to="to@example.com", subject=subject, text=text or "t", html=html,
                              date=datetime(2026, 4, 25, 14, 32, tzinfo=UTC),
                              extra_headers={"List-Unsubscribe": "<https://x.example/u/1/>"})
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == subject.strip() or " ".join(msg["Subject"].split()) == " ".join(subject.split())
    assert msg["Message-ID"] == "<abc@segops.local>" and msg["To"] == "to@example.com"
    assert msg["From"].addresses[0].addr_spec == "from@example.com"
    assert msg["List-Unsubscribe"] == "<https://x.example/u/1/>"
    if html:  # multipart: the CRLF before a boundary belongs to the boundary
        assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == (text or "t")
    else:  # a single part ends with the message's final line break (as EmailMessage.set_content does)
        assert msg.get_content().replace("\r\n", "\n") == (text or "t") + "\n"
    if html:
        assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == html


def test_header_injection_stays_inside_the_header():
    data = mime.build_message(message_id="a@b.example", sender="f@example.com", to="t@example.com",
                              subject="Hi\r\nBcc: victim@example.com", text="x", html="", date=utc_now())
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Bcc"] is None and "victim@example.com" in msg["Subject"]


@pytest.fixture
def smtp_runtime(data_dir, smtp_server):
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False, smtp_url=smtp_server.url))
    yield runtime
    runtime.stop()


def test_smtp_delivery_through_the_api(smtp_runtime, smtp_server, tenants, data_dir):
    a = tenants.a
    profiles(smtp_runtime, a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "Üla"}})
    with TestClient(create_app(smtp_runtime.settings, runtime=smtp_runtime)) as client:
        t = make_template(client, a.headers)
        r = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=a.headers)
        assert r.status_code == 201 and r.json()["status"] == "sent"
    [msg] = smtp_server.parsed()
    assert smtp_server.recipients() == ["u1@example.com"]
    assert msg["Subject"] == "Hello Üla" and msg["Message-ID"] == f"<{r.json()['messageId']}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Hi Üla" in msg.get_body(("plain",)).get_content()
    assert not (data_dir / "outbox").exists() or outbox(data_dir) == []


def _queue(runtime, tenant_id, template_id, addresses):
    sends = runtime.sends
    content_id, _, _ = sends.snapshot(tenant_id, template_id)
    return sends.outbound.enqueue([NewSend(tenant_id, "api", f"k{i}", content_id, to_address=addr,
                                           template_id=template_id) for i, addr in enumerate(addresses)])


def test_smtp_down_is_transient_then_retried(data_dir, tenants, client):
    a = tenants.a
    t = make_template(client, a.headers)
    port = free_port()
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False, smtp_url=f"smtp://127.0.0.1:{port}"))
    [send_id] = _queue(runtime, a.tenant_id, t["id"], ["x@example.com"])
    runtime.sends.dispatcher.deliver([send_id])
    row = runtime.meta.query_one("SELECT * FROM email_sends WHERE id = ?", (send_id,))
    assert row["status"] == "queued" and row["attempts"] == 1 and "cannot connect" in row["error"]
    assert row["not_before"] > db_time(utc_now())  # backed off

    from aiosmtpd.controller import Controller

    from tests.sends_fixtures import SmtpSink, _Handler

    sink = SmtpSink("127.0.0.1", port)
    controller = Controller(_Handler(sink), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        runtime.meta.execute("UPDATE jobs SET not_before = ? WHERE id = (SELECT job_id FROM email_sends WHERE id = ?)",
                             (db_time(utc_now()), send_id))  # the back-off is its retry job's
        assert runtime.sends.dispatcher.run_once() == 1
    finally:
        controller.stop()
        runtime.stop()
    assert runtime.meta.query_one("SELECT status FROM email_sends WHERE id = ?", (send_id,))[0] == "sent"
    assert sink.recipients() == ["x@example.com"]


def test_recovery_settles_a_dead_workers_outbox_hand_offs_exactly(runtime, tenants, client, data_dir):
    a = tenants.a
    t = make_template(client, a.headers)
    ids = _queue(runtime, a.tenant_id, t["id"], [f"r{i}@example.com" for i in range(4)])
    sends = runtime.sends
    # A worker claims all four, hands off the first two, and dies before settling anything.
    rows = sends.outbound.claim("dead-worker", timedelta(seconds=-1), 10)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    dead = sends.dispatcher
    dead.owner = "dead-worker"
    dead.hand_off([dead._render(a.tenant_id, row, dead._content(row["content_id"]), {}, row["to_address"], utc_now())
                   for row in rows[:2]])
    assert len(outbox(data_dir)) == 2
    assert sends.dispatcher.recover() == 4
    states = {r["id"]: (r["status"], r["to_address"], r["subject"])
              for r in runtime.meta.query("SELECT id, status, to_address, subject FROM email_sends")}
    assert [states[r["id"]] for r in rows] == [("sent", rows[0]["to_address"], "Hello"),
                                               ("sent", rows[1]["to_address"], "Hello"),
                                               ("queued", rows[2]["to_address"], None),
                                               ("queued", rows[3]["to_address"], None)]
    while sends.dispatcher.run_once():
        pass
    assert sorted(m["To"] for m in outbox(data_dir)) == [f"r{i}@example.com" for i in range(4)]
    assert {s for s in dict(runtime.meta.query("SELECT id, status FROM email_sends")).values()} == {"sent"}


def test_a_recovered_smtp_hand_off_keeps_its_recipient_so_a_bounce_suppresses_it(smtp_runtime, smtp_server, tenants):
    """A worker dies after the SMTP server took a message addressed by profile (no ``to`` on the
    row, like every broadcast and journey send): recovery cannot tell whether it went out, marks
    it ``unknown``, and still records the recipient and subject the hand-off used, so the bounce
    that comes back for its Message-ID suppresses the address."""
    a = tenants.a
    profiles(smtp_runtime, a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "Ann"}})
    sends = smtp_runtime.sends
    with TestClient(create_app(smtp_runtime.settings, runtime=smtp_runtime)) as client:
        t = make_template(client, a.headers, purpose="transactional")
        content_id, _, _ = sends.snapshot(a.tenant_id, t["id"])
        [send_id] = sends.outbound.enqueue([NewSend(a.tenant_id, "broadcast", "b1:u1", content_id, user_id="u1",
                                                    template_id=t["id"])])
        dispatcher = sends.dispatcher
        [row] = sends.outbound.claim(dispatcher.owner, timedelta(seconds=-1), 10)
        assert row["to_address"] is None
        dispatcher.hand_off([dispatcher._render(a.tenant_id, row, dispatcher._content(content_id),
                                                {"email": "u1@example.com", "first_name": "Ann"}, "u1@example.com",
                                                utc_now())])  # ... and the worker dies here
        assert smtp_server.recipients() == ["u1@example.com"]
        assert dispatcher.recover() == 1
        sent = client.get(f"/api/emails/{send_id}/", headers=a.headers).json()
        assert (sent["status"], sent["to"], sent["subject"]) == ("unknown", "u1@example.com", "Hello Ann")
        bounce = client.post("/api/recipients/feedback/", json={"type": "hard_bounce", "messageId": sent["messageId"]},
                             headers=a.headers)
        assert bounce.status_code == 202 and bounce.json() == {"email": "u1@example.com", "type": "hard_bounce",
                                                               "suppressed": True}


def test_recovery_never_retries_an_smtp_hand_off_blindly(smtp_runtime, smtp_server, tenants, client):
    a = tenants.a
    t = make_template(client, a.headers)
    [send_id] = _queue(smtp_runtime, a.tenant_id, t["id"], ["x@example.com"])
    smtp_runtime.sends.outbound.claim("dead-worker", timedelta(seconds=-1), 10)
    assert smtp_runtime.sends.dispatcher.recover() == 1
    row = smtp_runtime.meta.query_one("SELECT * FROM email_sends WHERE id = ?", (send_id,))
    assert row["status"] == "unknown" and "not retried" in row["error"]
    assert smtp_runtime.sends.dispatcher.run_once() == 0
    assert smtp_server.messages == []
