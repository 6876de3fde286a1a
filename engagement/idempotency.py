"""Idempotency keys for creating POSTs (``Idempotency-Key`` header), Stripe-style.

The first request with a key reserves it (``running``) in one write transaction, runs, and
stores its response (``done``). A later request with the same key and the same request
fingerprint gets that response replayed; a different fingerprint is a client bug (Unprocessable
``idempotency_key_reused``); while the first is still running the answer is Conflict
``idempotency_in_progress``. Server errors release the key so the client can retry. A
reservation whose request died (``locked_until`` passed) may be taken over. Keys are scoped
per tenant and kept ``RETENTION`` (24 h) after first use.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from common.time import db_time, parse_db_time, utc_now
from engine.errors import Conflict, Unprocessable
from engagement.common import SendsError, dumps, loads
from storage.metadata import MetadataStore

RETENTION = timedelta(hours=24)
LOCK = timedelta(minutes=5)
MAX_KEY_LENGTH = 255

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    status_code INTEGER,
    body BLOB,
    headers TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    locked_until TEXT,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
"""


def fingerprint(method: str, path: str, payload: Any) -> str:
    """Of the request as parsed (so key order and whitespace do not matter)."""
    canonical = orjson.dumps([method.upper(), path, payload], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: bytes
    headers: dict[str, str]


class IdempotencyStore:
    def __init__(self, meta: MetadataStore):
        self.meta = meta
        meta.ensure_schema("sends.idempotency", SCHEMA)

    @staticmethod
    def check_key(key: str) -> None:
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            raise SendsError("Idempotency-Key", f"must be 1..{MAX_KEY_LENGTH} printable ASCII characters",
                             "invalid_idempotency_key")

    def begin(self, tenant_id: int, key: str, fp: str) -> Replay | None:
        """None: the caller owns the key now and must ``finish`` or ``release`` it. A Replay: answer
        with it. Raises Conflict/Unprocessable as described in the module doc."""
        self.check_key(key)
        now = utc_now()
        with self.meta.transaction() as conn:
            row = conn.execute("SELECT * FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
                               (tenant_id, key)).fetchone()
            if row is not None and parse_db_time(row["expires_at"]) <= now:
                conn.execute("DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ?", (tenant_id, key))
                row = None
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, state, created_at, expires_at, "
                    "locked_until) VALUES (?,?,?,'running',?,?,?)",
                    (tenant_id, key, fp, db_time(now), db_time(now + RETENTION), db_time(now + LOCK)))
                return None
            if row["fingerprint"] != fp:
                raise Unprocessable("this key was already used with a different request",
                                    code="idempotency_key_reused", field="Idempotency-Key")
            if row["state"] == "done":
                return Replay(row["status_code"], bytes(row["body"]), loads(row["headers"], {}))
            if parse_db_time(row["locked_until"]) > now:
                raise Conflict("a request with this key is still being processed; retry shortly",
                               code="idempotency_in_progress", field="Idempotency-Key", retry_after=1)
            conn.execute("UPDATE idempotency_keys SET locked_until = ? WHERE tenant_id = ? AND key = ?",
                         (db_time(now + LOCK), tenant_id, key))
            return None

    def finish(self, tenant_id: int, key: str, status_code: int, body: bytes, headers: dict[str, str]) -> None:
        self.meta.execute(
            "UPDATE idempotency_keys SET state = 'done', status_code = ?, body = ?, headers = ?, locked_until = NULL "
            "WHERE tenant_id = ? AND key = ?", (status_code, body, dumps(headers), tenant_id, key))

    def release(self, tenant_id: int, key: str) -> None:
        self.meta.execute("DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND state = 'running'",
                          (tenant_id, key))

    def purge_expired(self) -> int:
        return self.meta.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?",
                                 (db_time(utc_now()),)).rowcount
