"""Journeys' store: CRUD with versions, the checks a definition's references must pass, and run reads.

A credential that may not send (``allow_sends`` false: ``may_send=False`` here) can draft,
edit, pause and archive journeys, but cannot make one send: it cannot activate a journey that
can send (create it active, resume it), change an active one's definition into one that can
send, or trigger one (``sends_not_allowed``). Whether a journey can send is a property of its
step types (``engagement.journeys.model.can_send``). Entries by events and segment computations are not
gated: whoever activated the journey decided that those send.

Runs pin the journey version they started on: editing an active journey changes new runs only.
Pausing a journey holds its runs where they are; archiving exits them (engagement/journeys/runner.py
advances runs). Recipients who are unsubscribed or suppressed are skipped by the send itself and
counted (``skippedUnsubscribedCount``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from common.time import api_time, db_time, utc_now
from engine.errors import Conflict, Forbidden
from engagement.common import NotFound, SendsError, dumps, loads
from engagement.journeys.model import can_send, normalize

if TYPE_CHECKING:
    from engine.segments.store import SegmentStore
    from engagement.outbound import Outbound

TRANSITIONS = {"draft": {"active", "archived"}, "active": {"paused", "archived"},
               "paused": {"active", "archived"}, "archived": set()}

SCHEMA = """
CREATE TABLE IF NOT EXISTS journeys (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    version INTEGER NOT NULL,
    trigger_type TEXT NOT NULL,
    trigger_event_type TEXT,
    trigger_segment_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    activated_at TEXT,
    archived_at TEXT
);
CREATE INDEX IF NOT EXISTS journeys_tenant ON journeys (tenant_id, id);
CREATE INDEX IF NOT EXISTS journeys_trigger ON journeys (tenant_id, trigger_type, status);
CREATE TABLE IF NOT EXISTS journey_versions (
    journey_id INTEGER NOT NULL REFERENCES journeys(id),
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (journey_id, version)
);
CREATE TABLE IF NOT EXISTS journey_runs (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    journey_id INTEGER NOT NULL REFERENCES journeys(id),
    version INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    address TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'completed', 'exited', 'failed')),
    current_step TEXT,
    wake_at TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    trigger_key TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_reason TEXT,
    last_error TEXT,
    lease_owner TEXT,
    lease_until TEXT,
    UNIQUE (journey_id, trigger_key)
);
CREATE INDEX IF NOT EXISTS journey_runs_due ON journey_runs (wake_at) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS journey_runs_user ON journey_runs (journey_id, user_id, started_at);
CREATE INDEX IF NOT EXISTS journey_runs_active_user ON journey_runs (tenant_id, user_id) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS journey_runs_journey ON journey_runs (journey_id, status);
CREATE TABLE IF NOT EXISTS journey_run_steps (
    run_id INTEGER NOT NULL REFERENCES journey_runs(id),
    step_id TEXT NOT NULL,
    type TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT '{}',
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS journey_run_events (
    run_id INTEGER NOT NULL REFERENCES journey_runs(id),
    event_type TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (run_id, event_type)
);
"""


def check_may_send(definition: dict[str, Any], may_send: bool, doing: str) -> None:
    """Forbidden when a credential without ``allow_sends`` would make a sending journey send."""
    if not may_send and can_send(definition):
        raise Forbidden(f"this credential may not send (allow_sends is false), so it cannot {doing} that sends email",
                        code="sends_not_allowed", field="allow_sends")


class JourneyStore:
    def __init__(self, meta, segments: SegmentStore, outbound: Outbound, wake: Callable[[], None]):
        """``wake``: tells this process's send worker that there is work (archived runs to exit)."""
        self.meta = meta
        self.segments = segments
        self.outbound = outbound
        self.wake = wake
        self.meta.ensure_schema("sends.journeys", SCHEMA)
        self._definitions: dict[tuple[int, int], dict[str, Any]] = {}

    # -- definitions --------------------------------------------------------------------
    def definition(self, journey_id: int, version: int) -> dict[str, Any]:
        key = (journey_id, version)
        found = self._definitions.get(key)
        if found is None:
            row = self.meta.query_one("SELECT definition FROM journey_versions WHERE journey_id = ? AND version = ?",
                                      key)
            found = self._definitions[key] = loads(row["definition"])
        return found

    def _check_references(self, tenant_id: int, definition: dict[str, Any], activating: bool) -> None:
        for i, step in enumerate(definition["steps"]):
            if step["type"] == "send_email":
                row = self.meta.query_one("SELECT archived_at FROM templates WHERE id = ? AND tenant_id = ?",
                                          (step["templateId"], tenant_id))
                if row is None:
                    raise SendsError(f"steps[{i}].templateId", f"no template {step['templateId']}",
                                     "template_not_found")
                if activating and row["archived_at"] is not None:
                    raise SendsError(f"steps[{i}].templateId", f"template {step['templateId']} is archived",
                                     "template_archived")
            if step["type"] == "branch" and step["condition"]["type"] == "segment":
                if not self.segments.exists(tenant_id, step["condition"]["segmentId"]):
                    raise SendsError(f"steps[{i}].condition.segmentId", "no such segment", "segment_not_found")
        trigger = definition["trigger"]
        if trigger["type"] == "segment" and not self.segments.exists(tenant_id, trigger["segmentId"]):
            raise SendsError("trigger.segmentId", "no such segment", "segment_not_found")
        exit_condition = definition.get("exitCondition")
        if exit_condition and exit_condition["type"] == "segment" and not self.segments.exists(
                tenant_id, exit_condition["segmentId"]):
            raise SendsError("exitCondition.segmentId", "no such segment", "segment_not_found")

    # -- CRUD ---------------------------------------------------------------------------
    def row(self, tenant_id: int, journey_id: int):
        row = self.meta.query_one("SELECT * FROM journeys WHERE id = ? AND tenant_id = ?", (journey_id, tenant_id))
        if row is None:
            raise NotFound("journey", journey_id)
        return row

    def to_json(self, row) -> dict[str, Any]:
        definition = self.definition(row["id"], row["version"])
        runs = dict(self.meta.query("SELECT status, count(*) FROM journey_runs WHERE journey_id = ? GROUP BY status",
                                    (row["id"],)))
        sends = self.outbound.counts("journey", [row["id"]])
        return {
            "id": row["id"], "name": row["name"], "status": row["status"], "version": row["version"],
            **definition,
            "stats": {
                "runs": sum(runs.values()), "activeRuns": runs.get("active", 0),
                "completedRuns": runs.get("completed", 0), "exitedRuns": runs.get("exited", 0),
                "failedRuns": runs.get("failed", 0), "sentCount": sends.get("sent", 0),
                "skippedUnsubscribedCount": sends.get("skipped_unsubscribed", 0),
                "suppressedCount": sends.get("suppressed", 0),
                "failedCount": sends.get("failed", 0) + sends.get("unknown", 0),
                "pendingCount": sends.get("queued", 0) + sends.get("handing_off", 0)},
            "createdAt": api_time(row["created_at"]), "updatedAt": api_time(row["updated_at"]),
            "activatedAt": api_time(row["activated_at"]), "archivedAt": api_time(row["archived_at"]),
        }

    def get(self, tenant_id: int, journey_id: int) -> dict[str, Any]:
        return self.to_json(self.row(tenant_id, journey_id))

    def list(self, tenant_id: int, status: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        where, params = "tenant_id = ?", [tenant_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        count, rows = self.meta.page(f"journeys WHERE {where}", params, "id", limit, offset)
        return count, [self.to_json(r) for r in rows]

    @staticmethod
    def _trigger_columns(definition: dict[str, Any]) -> tuple[str, str | None, int | None]:
        trigger = definition["trigger"]
        return trigger["type"], trigger.get("eventType"), trigger.get("segmentId")

    def create(self, tenant_id: int, name: str, document: dict[str, Any], status: str = "draft", *,
               may_send: bool) -> dict[str, Any]:
        """``document``: a validated journey document (engagement.journeys.model.normalize)."""
        definition = normalize(document)
        if status not in ("draft", "active"):
            raise SendsError("status", "a new journey is draft or active", "invalid_status")
        if status == "active":
            check_may_send(definition, may_send, "activate a journey")
        self._check_references(tenant_id, definition, status == "active")
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO journeys (tenant_id, name, status, version, trigger_type, trigger_event_type, "
                "trigger_segment_id, created_at, updated_at, activated_at) VALUES (?,?,?,1,?,?,?,?,?,?)",
                (tenant_id, name, status, *self._trigger_columns(definition), now, now,
                 now if status == "active" else None))
            conn.execute("INSERT INTO journey_versions (journey_id, version, definition, created_at) VALUES (?,1,?,?)",
                         (cur.lastrowid, dumps(definition), now))
        return self.get(tenant_id, cur.lastrowid)

    def update(self, tenant_id: int, journey_id: int, *, name: str | None = None,
               document: dict[str, Any] | None = None, status: str | None = None,
               may_send: bool) -> dict[str, Any]:
        row = self.row(tenant_id, journey_id)
        if row["status"] == "archived":
            raise Conflict("an archived journey cannot change", code="journey_archived", field="status")
        if status is not None and status != row["status"] and status not in TRANSITIONS[row["status"]]:
            raise Conflict(f"cannot go from {row['status']} to {status}", code="invalid_transition", field="status")
        new_status = status or row["status"]
        current = self.definition(journey_id, row["version"])
        definition = normalize(document) if document is not None else current
        changed = definition != current
        if new_status == "active" and (row["status"] != "active" or changed):
            doing = "activate a journey" if row["status"] != "active" else "change an active journey into one"
            check_may_send(definition, may_send, doing)
        self._check_references(tenant_id, definition, new_status == "active")
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            version = row["version"]
            if changed:
                version += 1
                conn.execute("INSERT INTO journey_versions (journey_id, version, definition, created_at) "
                             "VALUES (?,?,?,?)", (journey_id, version, dumps(definition), now))
            conn.execute(
                "UPDATE journeys SET name = ?, status = ?, version = ?, trigger_type = ?, trigger_event_type = ?, "
                "trigger_segment_id = ?, updated_at = ?, activated_at = CASE WHEN ? = 'active' AND status != 'active' "
                "THEN ? ELSE activated_at END, archived_at = CASE WHEN ? = 'archived' THEN ? ELSE archived_at END "
                "WHERE id = ? AND tenant_id = ?",
                (name or row["name"], new_status, version, *self._trigger_columns(definition), now, new_status, now,
                 new_status, now, journey_id, tenant_id))
        if new_status == "archived":
            self.wake()  # the worker exits the archived journey's runs
        return self.get(tenant_id, journey_id)

    # -- runs -------------------------------------------------------------------------------
    def run(self, tenant_id: int, journey_id: int, run_id: int) -> dict[str, Any]:
        run = self.meta.query_one("SELECT * FROM journey_runs WHERE id = ? AND journey_id = ? AND tenant_id = ?",
                                  (run_id, journey_id, tenant_id))
        if run is None:
            raise NotFound("run", run_id)
        steps = []
        for s in self.meta.query("SELECT s.*, e.status AS send_status FROM journey_run_steps s LEFT JOIN email_sends e "
                                 "ON e.source = 'journey' AND e.source_key = s.run_id || ':' || s.step_id "
                                 "WHERE s.run_id = ? ORDER BY s.at, s.rowid", (run_id,)):
            step = {"stepId": s["step_id"], "type": s["type"], "at": api_time(s["at"]), **loads(s["outcome"], {})}
            if s["send_status"] is not None:
                step["sendStatus"] = s["send_status"]
            steps.append(step)
        return {"id": run["id"], "journeyId": run["journey_id"], "journeyVersion": run["version"],
                "userId": run["user_id"], "status": run["status"], "currentStep": run["current_step"],
                "wakeAt": api_time(run["wake_at"]) if run["status"] == "active" else None,
                "startedAt": api_time(run["started_at"]), "finishedAt": api_time(run["finished_at"]),
                "exitReason": run["exit_reason"], "lastError": run["last_error"], "steps": steps}

    def runs(self, tenant_id: int, journey_id: int, status: str | None, limit: int, offset: int):
        self.row(tenant_id, journey_id)
        where, params = "journey_id = ? AND tenant_id = ?", [journey_id, tenant_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        count, rows = self.meta.page(f"journey_runs WHERE {where}", params, "id", limit, offset, columns="id")
        return count, [self.run(tenant_id, journey_id, r["id"]) for r in rows]

