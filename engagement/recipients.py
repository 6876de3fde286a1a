"""Who may receive what: per-topic subscription status, suppressions, signed recipient links.

State is keyed by (tenant, normalized email address): a bounce or a complaint is about an
address, and the address is what an unsubscribe link names. Topics are opt-out: an address is
subscribed to a topic until it unsubscribes. Marketing email is skipped for an address
unsubscribed from the template's topic; every email (transactional too) is skipped for a
suppressed address (hard bounce, complaint, or an operator's manual suppression).

Links in emails (unsubscribe, open pixel, click redirect) carry their payload and an HMAC-SHA256
(``settings.secret_key``) over it, so they need no login, cannot be forged, and cannot turn the
click redirect into an open redirect.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

import orjson

from common.time import api_time, db_time, utc_now
from engagement.common import SendsError
from storage.metadata import MetadataStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS recipient_subscriptions (
    tenant_id INTEGER NOT NULL,
    address TEXT NOT NULL,
    topic TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('subscribed', 'unsubscribed')),
    source TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, address, topic)
);
CREATE TABLE IF NOT EXISTS recipient_suppressions (
    tenant_id INTEGER NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    detail TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, address)
);
CREATE TABLE IF NOT EXISTS recipient_feedback (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    message_id TEXT,
    detail TEXT NOT NULL DEFAULT '',
    received_at TEXT NOT NULL
);
"""

FEEDBACK_KINDS = ("hard_bounce", "soft_bounce", "complaint")
TOPIC = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Deliberately loose (RFC 5321 is wider than any regex): one @, no spaces or angle brackets,
# a dot in the domain. The mail server is the real judge.
EMAIL = re.compile(r"^[^@\s<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\.[A-Za-z0-9-]{2,63}$")


def normalize_address(value: str, field: str = "email") -> str:
    address = value.strip().lower() if isinstance(value, str) else ""
    if not EMAIL.match(address) or ".." in address:
        raise SendsError(field, "not a valid email address", "invalid_email")
    return address


def valid_address(value: Any) -> str | None:
    """The normalized address, or None when ``value`` is not one (e.g. a profile's bad trait)."""
    try:
        return normalize_address(value)
    except SendsError:
        return None


class Signer:
    """Compact signed tokens: urlsafe-base64(JSON payload) + "." + truncated HMAC-SHA256."""

    def __init__(self, secret: str):
        self._key = hashlib.sha256(b"segops-recipient-links:" + secret.encode()).digest()

    def _mac(self, body: bytes) -> str:
        digest = hmac.digest(self._key, body, "sha256")[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, payload: list) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
        return f"{body.decode()}.{self._mac(body)}"

    def verify(self, token: str) -> list | None:
        body, dot, mac = token.rpartition(".")
        # bytes: compare_digest refuses str with non-ASCII characters (a forged token may have any)
        if not dot or not hmac.compare_digest(self._mac(body.encode()).encode(), mac.encode()):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, list) else None


class Recipients:
    def __init__(self, meta: MetadataStore):
        self.meta = meta
        meta.ensure_schema("sends.recipients", SCHEMA)

    # -- reads --------------------------------------------------------------------------
    def status(self, tenant_id: int, address: str) -> dict[str, Any]:
        topics = {r["topic"]: {"status": r["status"], "source": r["source"], "updatedAt": api_time(r["updated_at"])}
                  for r in self.meta.query("SELECT * FROM recipient_subscriptions WHERE tenant_id = ? AND address = ? "
                                           "ORDER BY topic", (tenant_id, address))}
        sup = self.meta.query_one("SELECT * FROM recipient_suppressions WHERE tenant_id = ? AND address = ?",
                                  (tenant_id, address))
        return {"email": address, "topics": topics, "defaultStatus": "subscribed",
                "suppressed": sup is not None,
                "suppression": None if sup is None else {"reason": sup["reason"], "detail": sup["detail"],
                                                         "createdAt": api_time(sup["created_at"])}}

    def blocked(self, tenant_id: int, pairs: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str | None], str]:
        """For (address, topic) pairs (topic None = transactional), those that must not be sent:
        -> "suppressed" or "skipped_unsubscribed". Two indexed queries for any number of pairs."""
        pairs = set(pairs)
        addresses = sorted({a for a, _ in pairs})
        out: dict[tuple[str, str | None], str] = {}
        if not addresses:
            return out
        suppressed: set[str] = set()
        unsubscribed: set[tuple[str, str]] = set()
        conn = self.meta.connection()
        for start in range(0, len(addresses), 500):
            chunk = addresses[start:start + 500]
            marks = ",".join("?" * len(chunk))
            suppressed.update(r[0] for r in conn.execute(
                f"SELECT address FROM recipient_suppressions WHERE tenant_id = ? AND address IN ({marks})",
                (tenant_id, *chunk)))
            unsubscribed.update((r[0], r[1]) for r in conn.execute(
                f"SELECT address, topic FROM recipient_subscriptions WHERE tenant_id = ? AND status = 'unsubscribed' "
                f"AND address IN ({marks})", (tenant_id, *chunk)))
        for address, topic in pairs:
            if address in suppressed:
                out[(address, topic)] = "suppressed"
            elif topic is not None and (address, topic) in unsubscribed:
                out[(address, topic)] = "skipped_unsubscribed"
        return out

    # -- writes -------------------------------------------------------------------------
    def set_subscription(self, tenant_id: int, address: str, topic: str, status: str, source: str) -> None:
        if not TOPIC.match(topic):
            raise SendsError("topic", "lowercase letters, digits, _ . - (max 64)", "invalid_topic")
        self.meta.execute(
            "INSERT INTO recipient_subscriptions (tenant_id, address, topic, status, source, updated_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (tenant_id, address, topic) DO UPDATE SET "
            "status = excluded.status, source = excluded.source, updated_at = excluded.updated_at",
            (tenant_id, address, topic, status, source, db_time(utc_now())))

    def suppress(self, tenant_id: int, address: str, reason: str, detail: str = "") -> None:
        """First reason wins (a later bounce does not hide an earlier complaint)."""
        self.meta.execute(
            "INSERT INTO recipient_suppressions (tenant_id, address, reason, detail, created_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (tenant_id, address) DO NOTHING", (tenant_id, address, reason, detail, db_time(utc_now())))

    def unsuppress(self, tenant_id: int, address: str) -> bool:
        return self.meta.execute("DELETE FROM recipient_suppressions WHERE tenant_id = ? AND address = ?",
                                 (tenant_id, address)).rowcount > 0

    def record_feedback(self, tenant_id: int, address: str, kind: str, message_id: str | None,
                        detail: str = "") -> bool:
        """Log a bounce/complaint report; hard bounces and complaints suppress the address at once.
        Returns whether the address is now suppressed."""
        if kind not in FEEDBACK_KINDS:
            raise SendsError("type", f"must be one of {', '.join(FEEDBACK_KINDS)}", "invalid_feedback_type")
        self.meta.execute(
            "INSERT INTO recipient_feedback (tenant_id, address, kind, message_id, detail, received_at) "
            "VALUES (?,?,?,?,?,?)", (tenant_id, address, kind, message_id, detail, db_time(utc_now())))
        if kind in ("hard_bounce", "complaint"):
            self.suppress(tenant_id, address, kind, detail)
            return True
        return self.meta.query_one("SELECT 1 FROM recipient_suppressions WHERE tenant_id = ? AND address = ?",
                                   (tenant_id, address)) is not None
