"""Broadcasts (Klaviyo campaigns): prepare a dry run, review it, redeem it within 15 minutes.

``prepare`` freezes both halves of a send: the template (with its brand kit, as send content)
and the audience (the member user ids of a segment's current computation, or of an inline
definition run now) into ``broadcast_recipients``. It answers the audience size, a sample
and ``expiresAt``. ``redeem`` turns the frozen audience into queued EmailSends in one
``INSERT ... SELECT`` (unique per broadcast and user, so a repeated redeem adds nothing); the
worker hands them off and skips, at hand-off time, recipients who are unsubscribed or
suppressed by then. ``cancel`` stops every send not handed off yet. Progress is counted from
the sends themselves, so it is exact while the broadcast runs.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from common.time import api_time, db_time, parse_db_time, utc_now
from compiler import DefinitionError
from engine.errors import Conflict, Gone
from engine.segments.store import SegmentNotFound
from engagement.common import NotFound, SendsError, dumps, loads
from engagement.recipients import valid_address

if TYPE_CHECKING:
    from engine.segments.store import SegmentStore
    from engagement.outbound import Outbound
    from engagement.profiles import ProfileDirectory

PREPARED_TTL = timedelta(minutes=15)
SAMPLE_SIZE = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcasts (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('prepared', 'sending', 'sent', 'cancelled')),
    template_id INTEGER NOT NULL,
    content_id INTEGER NOT NULL,
    audience TEXT NOT NULL,
    audience_size INTEGER NOT NULL,
    sample TEXT NOT NULL,
    prepared_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    redeemed_at TEXT,
    completed_at TEXT,
    cancelled_at TEXT
);
CREATE INDEX IF NOT EXISTS broadcasts_tenant ON broadcasts (tenant_id, id);
CREATE TABLE IF NOT EXISTS broadcast_recipients (
    broadcast_id INTEGER NOT NULL REFERENCES broadcasts(id),
    user_id TEXT NOT NULL,
    PRIMARY KEY (broadcast_id, user_id)
) WITHOUT ROWID;
"""


class Broadcasts:
    def __init__(self, meta, segments: SegmentStore, outbound: Outbound, profiles: ProfileDirectory, *,
                 domain: str, snapshot: Callable[[int, int], tuple], wake: Callable[[], None],
                 current_members: Callable[[int, int], pa.Array | None],
                 compile_definition: Callable[[int, Any], Any],
                 member_table: Callable[[Any], pa.Table]):
        """The audience comes from ``current_members(tenant_id, segment_id)`` (its current computation's)
        or from ``member_table(compile_definition(tenant_id, definition))`` (a definition run now: a
        ``CompiledSegment``'s member table); ``snapshot`` is ``Sends.snapshot``; ``wake`` tells this
        process's send worker there is work."""
        self.meta = meta
        self.segments = segments
        self.outbound = outbound
        self.profiles = profiles
        self.domain = domain
        self.snapshot = snapshot
        self.wake = wake
        self.current_members = current_members
        self.compile_definition = compile_definition
        self.member_table = member_table
        self.meta.ensure_schema("sends.broadcasts", SCHEMA)

    # -- audience ---------------------------------------------------------------------------
    def _audience(self, tenant_id: int, audience: dict[str, Any]) -> pa.Array:
        """The audience's user ids now (unique, sorted)."""
        if audience.get("segmentId") is not None:
            segment_id = audience["segmentId"]
            try:
                members = self.current_members(tenant_id, segment_id)
            except SegmentNotFound:
                raise SendsError("audience.segmentId", f"no segment {segment_id}", "segment_not_found") from None
            if members is not None:
                return pc.unique(members).sort()
            found = self.segments.definition(tenant_id, segment_id)
            if found is None:
                raise SendsError("audience.segmentId", f"segment {segment_id} has no definition yet",
                                 "segment_has_no_definition")
            definition, field = found[1], "audience.segmentId"
        else:
            definition, field = audience["definition"], "audience.definition"
        try:
            compiled = self.compile_definition(tenant_id, definition)
        except DefinitionError as err:  # paths are rooted at "definition": re-root them at the audience
            first = err.errors[0]
            path = first.path[len("definition"):] if first.path.startswith("definition") else f".{first.path}"
            raise SendsError(f"{field}{path}" if field.endswith("definition") else field, first.message,
                             first.code) from None
        return self.member_table(compiled).column("user_id").combine_chunks()

    # -- lifecycle --------------------------------------------------------------------------
    def prepare(self, tenant_id: int, *, template_id: int, audience: dict[str, Any], name: str | None) -> dict:
        content_id, _, template = self.snapshot(tenant_id, template_id)
        users = self._audience(tenant_id, audience)
        sample_ids = users.slice(0, SAMPLE_SIZE).to_pylist()
        traits = self.profiles.traits(tenant_id, sample_ids)
        sample = [{"userId": u, "email": valid_address((traits.get(u) or {}).get("email"))} for u in sample_ids]
        now = utc_now()
        with self.meta.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO broadcasts (tenant_id, name, status, template_id, content_id, audience, audience_size, "
                "sample, prepared_at, expires_at) VALUES (?,?,'prepared',?,?,?,?,?,?,?)",
                (tenant_id, name or template["name"], template_id, content_id, dumps(audience), len(users),
                 dumps(sample), db_time(now), db_time(now + PREPARED_TTL)))
            broadcast_id = cur.lastrowid
            conn.executemany("INSERT INTO broadcast_recipients (broadcast_id, user_id) VALUES (?, ?)",
                             ((broadcast_id, u) for u in users.to_pylist()))
        return self.get(tenant_id, broadcast_id)

    def redeem(self, tenant_id: int, broadcast_id: int) -> dict:
        """Fire a prepared send: Gone once it expired, Conflict unless it is still ``prepared``."""
        row = self.row(tenant_id, broadcast_id)
        now = utc_now()
        if row["status"] != "prepared":
            raise Conflict(f"this broadcast is {row['status']}, not prepared",
                           code="not_prepared", field="preparedSendId")
        if parse_db_time(row["expires_at"]) <= now:
            raise Gone("the prepared send expired; prepare it again",
                       code="prepared_send_expired", field="preparedSendId")
        stamp = db_time(now)
        with self.meta.transaction() as conn:
            moved = conn.execute("UPDATE broadcasts SET status = 'sending', redeemed_at = ? WHERE id = ? "
                                 "AND status = 'prepared'", (stamp, broadcast_id)).rowcount
            if not moved:
                raise Conflict("this broadcast was redeemed meanwhile", code="not_prepared", field="preparedSendId")
            outbound = self.outbound
            first_job = outbound.new_jobs(conn, tenant_id, "broadcast", row["audience_size"])
            conn.execute(
                "INSERT INTO email_sends (tenant_id, message_id, source, source_id, source_key, user_id, template_id, "
                "content_id, data, status, not_before, created_at, job_id) "
                "SELECT ?, lower(hex(randomblob(16))) || '@' || ?, 'broadcast', ?, ? || ':' || user_id, user_id, ?, ?, "
                "'{}', 'queued', ?, ?, ? + (row_number() OVER (ORDER BY user_id) - 1) / ? FROM broadcast_recipients "
                "WHERE broadcast_id = ? ORDER BY user_id ON CONFLICT (source, source_key) DO NOTHING",
                (tenant_id, self.domain, broadcast_id, str(broadcast_id), row["template_id"], row["content_id"],
                 stamp, stamp, first_job, outbound.chunk, broadcast_id))
        self.wake()
        return self.get(tenant_id, broadcast_id)

    def cancel(self, tenant_id: int, broadcast_id: int) -> dict:
        row = self.row(tenant_id, broadcast_id)
        if row["status"] in ("sent", "cancelled"):
            raise Conflict(f"this broadcast is already {row['status']}", code="not_cancellable", field="status")
        with self.meta.transaction() as conn:
            conn.execute("UPDATE broadcasts SET status = 'cancelled', cancelled_at = ? WHERE id = ?",
                         (db_time(utc_now()), broadcast_id))
            self.outbound.cancel_queued(conn, "broadcast", broadcast_id)
        return self.get(tenant_id, broadcast_id)

    # -- reading ----------------------------------------------------------------------------
    def row(self, tenant_id: int, broadcast_id: int):
        row = self.meta.query_one("SELECT * FROM broadcasts WHERE id = ? AND tenant_id = ?", (broadcast_id, tenant_id))
        if row is None:
            raise NotFound("broadcast", broadcast_id)
        return row

    def get(self, tenant_id: int, broadcast_id: int) -> dict:
        row = self.row(tenant_id, broadcast_id)
        counts = self.outbound.counts("broadcast", [broadcast_id]) if row["status"] != "prepared" else {}
        pending = counts.get("queued", 0) + counts.get("handing_off", 0)
        if row["status"] == "sending" and pending == 0:
            self.meta.execute("UPDATE broadcasts SET status = 'sent', completed_at = ? WHERE id = ? "
                              "AND status = 'sending'", (db_time(utc_now()), broadcast_id))
            row = self.row(tenant_id, broadcast_id)
        status = row["status"]
        if status == "prepared" and parse_db_time(row["expires_at"]) <= utc_now():
            status = "expired"
        return {
            "id": row["id"], "preparedSendId": row["id"], "name": row["name"], "status": status,
            "templateId": row["template_id"], "audience": loads(row["audience"]),
            "audienceSize": row["audience_size"], "sample": loads(row["sample"], []),
            "expiresAt": api_time(row["expires_at"]), "preparedAt": api_time(row["prepared_at"]),
            "redeemedAt": api_time(row["redeemed_at"]), "completedAt": api_time(row["completed_at"]),
            "cancelledAt": api_time(row["cancelled_at"]),
            "progress": {
                "sentCount": counts.get("sent", 0),
                "skippedUnsubscribedCount": counts.get("skipped_unsubscribed", 0),
                "suppressedCount": counts.get("suppressed", 0),
                "failedCount": counts.get("failed", 0) + counts.get("unknown", 0),
                "cancelledCount": counts.get("cancelled", 0),
                "pendingCount": pending,
            },
        }

    def list(self, tenant_id: int, limit: int, offset: int) -> tuple[int, list[dict]]:
        count, rows = self.meta.page("broadcasts WHERE tenant_id = ?", (tenant_id,), "id DESC", limit, offset,
                                     columns="id")
        return count, [self.get(tenant_id, r["id"]) for r in rows]
