"""Fixtures and helpers for the engagement-layer tests (templates ... broadcasts).

Use with ``pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]``.

* ``smtp_server``: a real aiosmtpd SMTP server on 127.0.0.1 (free port) collecting messages
  (``.messages``: list of (envelope_from, envelope_to list, raw bytes)); ``.url`` for Settings.
* ``profiles(runtime, tenant_id, {user_id: traits})``: identify profiles straight into the lake.
* ``outbox(data_dir)``: the parsed ``.eml`` files of the outbox transport.
* ``make_template(client, headers, **fields)``: create a template over HTTP, return its JSON.
"""
from __future__ import annotations

import email
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def parsed(self) -> list[EmailMessage]:
        with self.lock:
            return [email.message_from_bytes(raw, policy=policy.default) for _, _, raw in self.messages]

    def recipients(self) -> list[str]:
        with self.lock:
            return [to for _, tos, _ in self.messages for to in tos]


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope):
        with self.sink.lock:
            self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(_Handler(sink), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def profiles(runtime, tenant_id: int, users: dict[str, dict]) -> None:
    """Write identify traits into the lake (as a flushed identify batch would)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    runtime.lake.upsert_profiles(tenant_id, [{"user_id": uid, "traits": traits, "updated_at": now}
                                             for uid, traits in users.items()])


def outbox(data_dir: Path) -> list[EmailMessage]:
    directory = Path(data_dir) / "outbox"
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(directory.glob("*.eml"))]


def make_template(client, headers, **fields) -> dict:
    body = {"name": "Welcome", "subject": "Hello {{ first_name }}",
            "html": "<html><body><p>Hi {{ first_name }}</p><a href=\"https://shop.example/x?a=1&amp;b=2\">Shop</a>"
                    "</body></html>",
            "text": "Hi {{ first_name }}", "purpose": "marketing", **fields}
    response = client.post("/api/templates/", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def drain(runtime, max_cycles: int = 100) -> None:
    """Run the journey/send worker's cycle in this thread until nothing is due."""
    from engagement.worker import SendWorker

    worker = SendWorker(runtime.sends)
    for _ in range(max_cycles):
        if worker.cycle() == 0:
            return
    raise AssertionError("the worker did not become idle")


def fast_forward(runtime, journey_id: int | None = None) -> int:
    """Make every waiting run due now (as if its wait had elapsed)."""
    from common.time import db_time, utc_now

    sql = "UPDATE journey_runs SET wake_at = ? WHERE status = 'active'"
    params: tuple = (db_time(utc_now()),)
    if journey_id is not None:
        sql += " AND journey_id = ?"
        params += (journey_id,)
    return runtime.meta.execute(sql, params).rowcount


def make_journey(client, headers, **fields) -> dict:
    response = client.post("/api/journeys/", json={"name": "J", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def outbox_headers(data_dir: Path) -> list[tuple[str, str]]:
    """(To, Subject) of every outbox message, headers only (fast for thousands of files)."""
    return list(outbox_by_message_id(data_dir).values())


def outbox_by_message_id(data_dir: Path) -> dict[str, tuple[str, str]]:
    """Message-ID (without angle brackets) -> (To, Subject) of every outbox message, headers only."""
    from email.parser import BytesHeaderParser

    parser = BytesHeaderParser(policy=policy.compat32)
    out = {}
    for path in (Path(data_dir) / "outbox").glob("*.eml"):
        with open(path, "rb") as fh:
            headers = parser.parse(fh)
        out[headers["Message-ID"].strip("<>")] = (headers["To"], headers["Subject"])
    return out
