"""The durable record of every email we mean to send (``email_sends``), whatever asked for it.

An EmailSend row is created ``queued`` with its Message-ID already minted, and moves:

    queued -> handing_off -> sent | failed | skipped_unsubscribed | suppressed | unknown
    queued -> cancelled                      (a cancelled broadcast's unsent rows)
    handing_off -> queued                    (transient failure, retried after a back-off)

The queueing is engine.jobs': rows are created with the ``send`` job that hands them off (one per
``chunk`` rows, e.g. one per journey step, ``chunk`` per job for a broadcast), in the same
transaction, and point at it (``job_id``). ``handing_off`` is the durable intent: the job's holder
moves rows there (``take``, in one write transaction that checks it still holds the job's lease)
*before* it gives them to the transport, and settles them afterwards with the job (``settle``). Just
before giving a message to the transport it records the message's recipient and subject on the
row (``record_intent``, again only while it holds the lease; otherwise it hands off nothing). A
job whose lease lapsed with rows ``handing_off`` belonged to a worker that died mid-hand-off; its
next holder asks the transport whether each Message-ID went out (``was_delivered``): yes -> sent,
no -> queued again, cannot tell (SMTP) -> ``unknown``, left for an operator instead of risking a
duplicate. Both settle through ``settle`` with the recorded recipient and subject, so a recovered
send is recorded like any other (a bounce for it finds its address). A transient failure re-queues
its rows as a new job due after the back-off. ``UNIQUE (source, source_key)`` makes creating the
row itself at most once per journey step or broadcast recipient.
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from common.time import api_time, db_time, utc_now
from engagement.common import NotFound, dumps, loads
from engagement.templates import Content
from engine.jobs import JobQueue, Lease
from storage.metadata import MetadataStore

KIND = "send"  # the jobs (engine.jobs) that hand sends off

SCHEMA = """
CREATE TABLE IF NOT EXISTS send_contents (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    doc TEXT NOT NULL,
    template_id INTEGER,
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, digest)
);
CREATE TABLE IF NOT EXISTS email_sends (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL CHECK (source IN ('api', 'journey', 'broadcast')),
    source_id INTEGER,
    source_key TEXT NOT NULL,
    user_id TEXT,
    to_address TEXT,
    template_id INTEGER,
    content_id INTEGER NOT NULL REFERENCES send_contents(id),
    data TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('queued', 'handing_off', 'sent', 'failed', 'skipped_unsubscribed',
                                           'suppressed', 'cancelled', 'unknown')),
    error TEXT,
    subject TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT NOT NULL,                 -- when its job is due (a retry's back-off)
    lease_owner TEXT,                         -- unused: the lease is its job's (engine.jobs)
    lease_until TEXT,                         -- unused
    created_at TEXT NOT NULL,
    handing_off_at TEXT,
    sent_at TEXT,
    failed_at TEXT,
    skipped_at TEXT,
    cancelled_at TEXT,
    opened_at TEXT,
    clicked_at TEXT,
    open_count INTEGER NOT NULL DEFAULT 0,
    click_count INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER,                           -- the send job that hands it off (engine.jobs)
    UNIQUE (source, source_key)
);
CREATE INDEX IF NOT EXISTS email_sends_queued ON email_sends (job_id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS email_sends_handing_off ON email_sends (job_id) WHERE status = 'handing_off';
CREATE INDEX IF NOT EXISTS email_sends_tenant ON email_sends (tenant_id, id);
CREATE INDEX IF NOT EXISTS email_sends_source ON email_sends (source, source_id, status);
"""

MAX_ATTEMPTS = 5


def mail_domain(public_base_url: str) -> str:
    host = (public_base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]).lower()
    return host if any(c.isalpha() for c in host) and "." in host else "segops.local"


def new_message_id(domain: str) -> str:
    return f"{secrets.token_hex(16)}@{domain}"


@dataclass(frozen=True)
class NewSend:
    tenant_id: int
    source: str
    source_key: str
    content_id: int
    user_id: str | None = None
    to_address: str | None = None
    template_id: int | None = None
    source_id: int | None = None
    data: dict[str, Any] | None = None


def send_json(row) -> dict[str, Any]:
    """The API's EmailSend."""
    return {
        "id": row["id"], "messageId": row["message_id"], "status": row["status"], "source": row["source"],
        "sourceId": row["source_id"], "userId": row["user_id"], "to": row["to_address"],
        "templateId": row["template_id"], "subject": row["subject"], "error": row["error"],
        "attempts": row["attempts"], "createdAt": api_time(row["created_at"]),
        "handingOffAt": api_time(row["handing_off_at"]), "sentAt": api_time(row["sent_at"]),
        "failedAt": api_time(row["failed_at"]), "skippedAt": api_time(row["skipped_at"]),
        "cancelledAt": api_time(row["cancelled_at"]), "openedAt": api_time(row["opened_at"]),
        "clickedAt": api_time(row["clicked_at"]), "openCount": row["open_count"], "clickCount": row["click_count"],
    }


@dataclass(frozen=True)
class Outcome:
    """How one claimed send was settled."""

    send_id: int
    status: str                 # a final state, or "queued" to retry
    error: str | None = None
    subject: str | None = None
    to_address: str | None = None
    retry_after: float = 0.0


UNKNOWN_AFTER_CRASH = ("the worker stopped during the SMTP hand-off; whether the server accepted the message is "
                       "unknown, so it is not retried (review and resend by hand)")


def recovered(row, delivered: bool | None) -> Outcome:
    """A dead worker's hand-off (``row``, with the intent it recorded), settled by what the
    transport knows (see the module doc)."""
    if delivered is None:
        return Outcome(row["id"], "unknown", UNKNOWN_AFTER_CRASH, row["subject"], row["to_address"])
    if delivered:
        return Outcome(row["id"], "sent", None, row["subject"], row["to_address"])
    return Outcome(row["id"], "queued", to_address=row["to_address"])


def lease_of(row) -> Lease:
    """The lease of the job a row was taken under (``take`` returns it on each row)."""
    return Lease(row["job_id"], KIND, row["tenant_id"], None, {}, row["job_attempt"], row["job_owner"])


class Outbound:
    def __init__(self, meta: MetadataStore, domain: str, jobs: JobQueue, chunk: int = 1000):
        self.meta = meta
        self.domain = domain
        self.jobs = jobs  # created first: it migrates an older email_sends (job_id) before the schema below
        self.chunk = chunk
        meta.ensure_schema("sends.outbound", SCHEMA)

    # -- content snapshots ----------------------------------------------------------------
    def store_content(self, tenant_id: int, content: Content, template_id: int | None) -> int:
        doc = dumps(content.to_json())
        digest = hashlib.sha256(doc.encode()).hexdigest()
        conn = self.meta.connection()
        conn.execute("INSERT INTO send_contents (tenant_id, digest, doc, template_id, created_at) VALUES (?,?,?,?,?) "
                     "ON CONFLICT (tenant_id, digest) DO NOTHING",
                     (tenant_id, digest, doc, template_id, db_time(utc_now())))
        return conn.execute("SELECT id FROM send_contents WHERE tenant_id = ? AND digest = ?",
                            (tenant_id, digest)).fetchone()[0]

    def content(self, content_id: int) -> Content:
        row = self.meta.query_one("SELECT doc FROM send_contents WHERE id = ?", (content_id,))
        return Content.from_json(loads(row["doc"]))

    # -- creating -----------------------------------------------------------------------
    def enqueue(self, sends: Sequence[NewSend], conn=None) -> list[int]:
        """Insert queued rows with their send jobs; a (source, source_key) that exists already is kept
        as is. Returns the ids of every requested row (existing or new), in order. Pass ``conn`` to
        join the caller's transaction. Journey steps enqueue one send each: those of a tenant join its
        queued journey job (subject ``journey:<tenant>``) while there is one, so they are handed off
        in chunks as before instead of one job each."""
        if conn is None:
            with self.meta.transaction() as own:
                return self.enqueue(sends, own)
        if not sends:
            return []
        now = db_time(utc_now())
        tenant_id, source = sends[0].tenant_id, sends[0].source
        if source == "journey" and len(sends) <= self.chunk:
            first = self.jobs.enqueue(KIND, tenant_id, subject=f"journey:{tenant_id}", trigger=source, coalesce=True,
                                      conn=conn)
        else:
            first = self.new_jobs(conn, tenant_id, source, len(sends))
        rows = [(s.tenant_id, new_message_id(self.domain), s.source, s.source_id, s.source_key, s.user_id,
                 s.to_address, s.template_id, s.content_id, dumps(s.data or {}), now, now, first + i // self.chunk)
                for i, s in enumerate(sends)]
        conn.executemany(
            "INSERT INTO email_sends (tenant_id, message_id, source, source_id, source_key, user_id, to_address, "
            "template_id, content_id, data, status, not_before, created_at, job_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,'queued',?,?,?) ON CONFLICT (source, source_key) DO NOTHING", rows)
        return [conn.execute("SELECT id FROM email_sends WHERE source = ? AND source_key = ?",
                             (s.source, s.source_key)).fetchone()[0] for s in sends]

    def new_jobs(self, conn, tenant_id: int, source: str, count: int) -> int:
        """Queue the send jobs of ``count`` new rows, one per ``chunk``, in the caller's transaction
        (the caller wakes the worker after its commit); returns the first job's id: the i-th new row
        (from 0) belongs to job ``first + i // chunk``. A job whose rows all existed already finds
        nothing to take and is done."""
        ids = [self.jobs.enqueue(KIND, tenant_id, trigger=source, conn=conn) for _ in range(-(-count // self.chunk))]
        if ids and ids[-1] - ids[0] != len(ids) - 1:  # AUTOINCREMENT under our write lock: never
            raise RuntimeError(f"send job ids are not consecutive: {ids}")
        return ids[0] if ids else 0

    # -- reading ------------------------------------------------------------------------
    def get(self, tenant_id: int, send_id: int) -> dict[str, Any]:
        row = self.meta.query_one("SELECT * FROM email_sends WHERE id = ? AND tenant_id = ?", (send_id, tenant_id))
        if row is None:
            raise NotFound("email", send_id)
        return send_json(row)

    def many(self, tenant_id: int, send_ids: Iterable[int]) -> list[dict[str, Any]]:
        ids = list(send_ids)
        by_id = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self.meta.query(f"SELECT * FROM email_sends WHERE tenant_id = ? AND id IN "
                                       f"({','.join('?' * len(chunk))})", (tenant_id, *chunk)):
                by_id[row["id"]] = send_json(row)
        return [by_id[i] for i in ids]

    def list(self, tenant_id: int, *, status: str | None, source: str | None, source_id: int | None,
             limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        where, params = ["tenant_id = ?"], [tenant_id]
        for column, value in (("status", status), ("source", source), ("source_id", source_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = " AND ".join(where)
        count, rows = self.meta.page(f"email_sends WHERE {clause}", params, "id", limit, offset)
        return count, [send_json(r) for r in rows]

    def counts(self, source: str, source_ids: Sequence[int]) -> dict[str, int]:
        """status -> number of rows of these sources (e.g. one broadcast, or a journey's runs)."""
        out: dict[str, int] = {}
        for start in range(0, len(source_ids), 500):
            chunk = source_ids[start:start + 500]
            for status, n in self.meta.query(
                    f"SELECT status, count(*) FROM email_sends WHERE source = ? AND source_id IN "
                    f"({','.join('?' * len(chunk))}) GROUP BY status", (source, *chunk)):
                out[status] = out.get(status, 0) + n
        return out

    def by_message_id(self, message_id: str):
        return self.meta.query_one("SELECT * FROM email_sends WHERE message_id = ?", (message_id,))

    # -- the hand-off protocol (under a send job's lease) ------------------------------------
    def claim(self, owner: str, lease: timedelta, limit: int) -> list:
        """Claim the oldest due send job for ``owner`` and take up to ``limit`` of its rows."""
        leases = self.jobs.claim(KIND, lease, owner=owner)
        return self.take(leases[0], limit) if leases else []

    def take(self, lease: Lease, limit: int) -> list:
        """Move up to ``limit`` queued rows of the leased job to ``handing_off`` and return them, each
        with the lease it was taken under (``lease_of``); none once the lease is lost. One write
        transaction: two holders never take the same row, and a holder whose lease lapsed takes
        nothing after the job's next holder claimed it (and read what it must recover)."""
        with self.meta.transaction() as conn:
            if not self.jobs.holds(lease, conn):
                return []
            return conn.execute(
                "UPDATE email_sends SET status = 'handing_off', handing_off_at = ?, attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM email_sends WHERE job_id = ? AND status = 'queued' ORDER BY id LIMIT ?) "
                "RETURNING *, ? AS job_attempt, ? AS job_owner",
                (db_time(utc_now()), lease.job_id, limit, lease.attempt, lease.owner)).fetchall()

    def handing_off(self, job_id: int) -> list:
        """The job's rows in ``handing_off``: read by its new holder, what a dead one left to recover."""
        return self.meta.query("SELECT * FROM email_sends WHERE job_id = ? AND status = 'handing_off' ORDER BY id",
                               (job_id,))

    def queued_jobs(self, send_ids: Sequence[int]) -> list[int]:
        """The jobs of those of these sends that are still queued."""
        ids = list(send_ids)
        if not ids:
            return []
        return [r[0] for r in self.meta.query(f"SELECT DISTINCT job_id FROM email_sends WHERE status = 'queued' AND "
                                              f"id IN ({','.join('?' * len(ids))}) ORDER BY job_id", ids)]

    def settle(self, lease: Lease, outcomes: Sequence[Outcome]) -> int:
        """Record the outcomes of the leased job's hand-offs and finish the job (done, or queued again
        while it has queued rows left) in one transaction; returns how many rows it settled, 0 once
        the lease is lost (the job's next holder then settles its hand-offs by recovery). A transient
        failure re-queues its rows as a new job, due after their back-off."""
        now = utc_now()
        stamp = db_time(now)
        columns = {"sent": "sent_at", "failed": "failed_at", "unknown": "failed_at",
                   "skipped_unsubscribed": "skipped_at", "suppressed": "skipped_at", "cancelled": "cancelled_at"}
        settled = 0
        retries: dict[float, int] = {}
        with self.meta.transaction() as conn:
            more = any(o.status == "queued" and not o.retry_after for o in outcomes) or conn.execute(
                "SELECT 1 FROM email_sends WHERE job_id = ? AND status = 'queued' LIMIT 1", (lease.job_id,)).fetchone()
            if not (self.jobs.release(lease, conn=conn) if more else self.jobs.complete(lease, conn=conn)):
                return 0
            for o in outcomes:
                if o.status == "queued":
                    due = now + timedelta(seconds=o.retry_after)
                    job_id = lease.job_id
                    if o.retry_after:
                        if o.retry_after not in retries:
                            retries[o.retry_after] = self.jobs.enqueue(KIND, lease.tenant_id, trigger="retry",
                                                                       not_before=due, conn=conn)
                        job_id = retries[o.retry_after]
                    cur = conn.execute(
                        "UPDATE email_sends SET status = 'queued', error = ?, not_before = ?, job_id = ?, "
                        "to_address = coalesce(?, to_address) WHERE id = ? AND status = 'handing_off' AND job_id = ?",
                        (o.error, db_time(due), job_id, o.to_address, o.send_id, lease.job_id))
                else:
                    cur = conn.execute(
                        f"UPDATE email_sends SET status = ?, error = ?, subject = coalesce(?, subject), "
                        f"to_address = coalesce(?, to_address), {columns[o.status]} = ? "
                        f"WHERE id = ? AND status = 'handing_off' AND job_id = ?",
                        (o.status, o.error, o.subject, o.to_address, stamp, o.send_id, lease.job_id))
                settled += cur.rowcount
        return settled

    def record_intent(self, lease: Lease, items: Sequence[tuple[int, str, str]]) -> bool:
        """Just before a hand-off: (send id, recipient, subject) of each message, so that whoever
        settles the send (this worker, or recovery after it died) records what went out. False (and
        nothing recorded): the lease is lost, the messages are not this worker's to hand off."""
        with self.meta.transaction() as conn:
            if not self.jobs.holds(lease, conn):
                return False
            conn.executemany("UPDATE email_sends SET to_address = ?, subject = ? "
                             "WHERE id = ? AND status = 'handing_off'",
                             [(address, subject, send_id) for send_id, address, subject in items])
        return True

    def cancel_queued(self, conn, source: str, source_id: int) -> int:
        return conn.execute("UPDATE email_sends SET status = 'cancelled', cancelled_at = ? "
                            "WHERE source = ? AND source_id = ? AND status = 'queued'",
                            (db_time(utc_now()), source, source_id)).rowcount

    def record_engagement(self, send_id: int, kind: str) -> None:
        """Count a click ("click"), or an open ("open") once per message: its one pixel is fetched
        again on every view, mail-proxy prefetch and replay, so repeats say nothing (each fetch is
        still an ``email_opened`` event, engagement/tracking.py). The first one's time is kept."""
        at, count = {"open": ("opened_at", "open_count"), "click": ("clicked_at", "click_count")}[kind]
        counted = "1" if kind == "open" else f"{count} + 1"
        self.meta.execute(f"UPDATE email_sends SET {at} = coalesce({at}, ?), {count} = {counted} WHERE id = ?",
                          (db_time(utc_now()), send_id))
