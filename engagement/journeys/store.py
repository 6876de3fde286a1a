"""Journeys: CRUD with versions, entry (event, segment entry, API), and advancing runs.

Every recipient's run advances on its own. Each step is one SQLite write transaction that
(1) moves the run from that step to the next with a compare-and-set on (lease owner, current
step), (2) inserts the step into ``journey_run_steps`` (primary key run + step) and (3) does
the step's durable effect (an EmailSend row, unique per run + step). So a (journey, run, step)
happens at most once whatever restarts or concurrent workers do; a worker that dies between
steps leaves a lease that runs out, and the next worker continues from the recorded step.

A credential that may not send (``allow_sends`` false: ``may_send=False`` here) can draft,
edit, pause and archive journeys, but cannot make one send: it cannot activate a journey that
can send (create it active, resume it), change an active one's definition into one that can
send, or trigger one (``sends_not_allowed``). Whether a journey can send is a property of its
step types (``journey_model.can_send``). Entries by events and segment computations are not
gated: whoever activated the journey decided that those send.

Runs pin the journey version they started on: editing an active journey changes new runs only.
Pausing a journey holds its runs where they are; archiving exits them. Recipients who are
unsubscribed or suppressed are skipped by the send itself and counted
(``skippedUnsubscribedCount``).
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from common.time import api_time, db_time, parse_db_time, utc_now
from engine.errors import Conflict, Forbidden, Unprocessable
from engine.segments.store import SegmentStore
from engagement.common import NotFound, SendsError, dumps, loads
from engagement.emails import snapshot_template
from engagement.journeys.model import (
    can_send,
    compare,
    filters_match,
    next_time_of_day,
    normalize,
    watched_event_types,
)
from engagement.outbound import NewSend
from engagement.recipients import valid_address

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from engagement.service import Sends

log = logging.getLogger(__name__)

TRANSITIONS = {"draft": {"active", "archived"}, "active": {"paused", "archived"},
               "paused": {"active", "archived"}, "archived": set()}
RETRY_AFTER_ERROR = timedelta(seconds=30)

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


@dataclass(frozen=True)
class Entry:
    """One recipient entering a journey."""

    user_id: str
    trigger_key: str
    data: dict[str, Any]
    address: str | None = None


class _Lost(Exception):
    """The run moved under us (another worker took it over): stop touching it."""


def _check_may_send(definition: dict[str, Any], may_send: bool, doing: str) -> None:
    if not may_send and can_send(definition):
        raise Forbidden(f"this credential may not send (allow_sends is false), so it cannot {doing} that sends email",
                        code="sends_not_allowed", field="allow_sends")


class Journeys:
    def __init__(self, runtime: "Runtime", sends: "Sends"):
        self.runtime = runtime
        self.sends = sends
        self.meta = runtime.meta
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
        segments = SegmentStore(self.meta)
        for i, step in enumerate(definition["steps"]):
            if step["type"] == "send_email":
                row = self.meta.query_one("SELECT archived_at FROM templates WHERE id = ? AND tenant_id = ?",
                                          (step["templateId"], tenant_id))
                if row is None:
                    raise SendsError(f"steps[{i}].templateId", f"no template {step['templateId']}", "template_not_found")
                if activating and row["archived_at"] is not None:
                    raise SendsError(f"steps[{i}].templateId", f"template {step['templateId']} is archived",
                                     "template_archived")
            if step["type"] == "branch" and step["condition"]["type"] == "segment":
                if not segments.exists(tenant_id, step["condition"]["segmentId"]):
                    raise SendsError(f"steps[{i}].condition.segmentId", "no such segment", "segment_not_found")
        trigger = definition["trigger"]
        if trigger["type"] == "segment" and not segments.exists(tenant_id, trigger["segmentId"]):
            raise SendsError("trigger.segmentId", "no such segment", "segment_not_found")
        exit_condition = definition.get("exitCondition")
        if exit_condition and exit_condition["type"] == "segment" and not segments.exists(
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
        sends = self.sends.outbound.counts("journey", [row["id"]])
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
        """``document``: a validated journey document (journey_model.normalize)."""
        definition = normalize(document)
        if status not in ("draft", "active"):
            raise SendsError("status", "a new journey is draft or active", "invalid_status")
        if status == "active":
            _check_may_send(definition, may_send, "activate a journey")
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
            _check_may_send(definition, may_send, doing)
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
            self.sends.wake()  # the worker exits the archived journey's runs
        return self.get(tenant_id, journey_id)

    # -- entering -------------------------------------------------------------------------
    def start_runs(self, journey_row, entries: Sequence[Entry]) -> list[int]:
        """Start runs for ``entries`` under the journey's re-entry rule, in one transaction.
        Returns the ids of the runs started (entries refused by the rule, or whose trigger_key
        already started a run, are left out)."""
        journey_id = journey_row["id"]
        definition = self.definition(journey_id, journey_row["version"])
        reentry = definition["reentry"]
        first = definition["steps"][0]["id"]
        now = utc_now()
        started = []
        with self.meta.transaction() as conn:
            for entry in entries:
                if reentry["mode"] != "always":
                    last = conn.execute("SELECT max(started_at) FROM journey_runs WHERE journey_id = ? AND user_id = ?",
                                        (journey_id, entry.user_id)).fetchone()[0]
                    if last is not None and (reentry["mode"] == "once" or
                                             parse_db_time(last) > now - timedelta(days=reentry["days"])):
                        continue
                cur = conn.execute(
                    "INSERT INTO journey_runs (tenant_id, journey_id, version, user_id, address, status, current_step, "
                    "wake_at, data, trigger_key, started_at) VALUES (?,?,?,?,?,'active',?,?,?,?,?) "
                    "ON CONFLICT (journey_id, trigger_key) DO NOTHING",
                    (journey_row["tenant_id"], journey_id, journey_row["version"], entry.user_id, entry.address,
                     first, db_time(now), dumps(entry.data), entry.trigger_key, db_time(now)))
                if cur.rowcount:
                    started.append(cur.lastrowid)
        if started:
            self.sends.wake()
        return started

    def trigger(self, tenant_id: int, journey_id: int, user_id: str, email: str | None,
                data: dict[str, Any], *, may_send: bool) -> dict[str, Any]:
        """The API entry: one recipient -> a run id."""
        row = self.row(tenant_id, journey_id)
        if row["trigger_type"] != "api":
            raise Conflict(f"this journey is entered by its {row['trigger_type']} trigger, not the API",
                           code="not_api_triggered", field="trigger")
        if row["status"] != "active":
            raise Conflict(f"the journey is {row['status']}", code="journey_not_active", field="status")
        _check_may_send(self.definition(journey_id, row["version"]), may_send, "trigger a journey")
        if email is None:
            profile = self.sends.profiles.one(tenant_id, user_id) or {}
            if valid_address(profile.get("email")) is None:
                raise Unprocessable(f"profile {user_id!r} has no valid email trait; pass email",
                                    code="no_email_address", field="userId")
        started = self.start_runs(row, [Entry(user_id, f"api:{uuid.uuid4().hex}", data, email)])
        if not started:
            raise Conflict("the journey's re-entry rule does not let this recipient in again",
                           code="reentry_blocked", field="userId")
        return self.run(tenant_id, journey_id, started[0])

    def on_events(self, tenant_id: int, events) -> int:
        """Accepted events (Runtime.event_feed): start runs for matching event triggers and remember watched events
        of recipients whose runs started before this batch. Returns the number of journeys whose
        trigger matched."""
        before = db_time(utc_now())
        journeys = self.meta.query("SELECT * FROM journeys WHERE tenant_id = ? AND status = 'active' "
                                   "AND trigger_type = 'event'", (tenant_id,))
        has_runs = self.meta.query_one("SELECT 1 FROM journey_runs WHERE tenant_id = ? AND status = 'active' LIMIT 1",
                                       (tenant_id,)) is not None
        if events.num_rows == 0 or not (journeys or has_runs):
            return 0
        rows = events.select(["event_id", "user_id", "event_type", "properties"]).to_pylist()
        matched = 0
        by_type: dict[str, list] = {}
        for journey in journeys:
            by_type.setdefault(journey["trigger_event_type"], []).append(journey)
        for journey in (j for t in {r["event_type"] for r in rows} for j in by_type.get(t, ())):
            trigger = self.definition(journey["id"], journey["version"])["trigger"]
            entries = []
            for event in rows:
                if event["event_type"] != trigger["eventType"]:
                    continue
                properties = loads(event["properties"], {}) or {}
                if filters_match(trigger.get("filters", []), properties):
                    entries.append(Entry(event["user_id"], f"event:{event['event_id']}",
                                         {**properties, "event": {"type": event["event_type"],
                                                                  "properties": properties}}))
            if entries:
                matched += 1
                self.start_runs(journey, entries)
        if has_runs:
            self._remember_events(tenant_id, rows, before)
        return matched

    def _remember_events(self, tenant_id: int, rows: list[dict], before: str) -> None:
        types_by_user: dict[str, set[str]] = {}
        for event in rows:
            types_by_user.setdefault(event["user_id"], set()).add(event["event_type"])
        users = sorted(types_by_user)
        now = db_time(utc_now())
        inserts = []
        for start in range(0, len(users), 500):
            chunk = users[start:start + 500]
            for run in self.meta.query(
                    f"SELECT id, journey_id, version, user_id FROM journey_runs WHERE tenant_id = ? AND status = 'active' "
                    f"AND started_at < ? AND user_id IN ({','.join('?' * len(chunk))})", (tenant_id, before, *chunk)):
                watched = watched_event_types(self.definition(run["journey_id"], run["version"]))
                inserts.extend((run["id"], t, now) for t in types_by_user[run["user_id"]] & watched)
        if inserts:
            with self.meta.transaction() as conn:
                conn.executemany("INSERT INTO journey_run_events (run_id, event_type, received_at) VALUES (?,?,?) "
                                 "ON CONFLICT (run_id, event_type) DO NOTHING", inserts)

    def on_segment_entered(self, tenant_id: int, segment_id: int, computation_id: int, user_ids: list[str]) -> int:
        """A new computation (Runtime.compute_listeners): recipients who entered a segment enter journeys
        triggered by it."""
        started = 0
        for journey in self.meta.query("SELECT * FROM journeys WHERE tenant_id = ? AND status = 'active' "
                                       "AND trigger_type = 'segment' AND trigger_segment_id = ?", (tenant_id, segment_id)):
            entries = [Entry(u, f"segment:{computation_id}:{u}", {}) for u in user_ids]
            for start in range(0, len(entries), 1000):
                started += len(self.start_runs(journey, entries[start:start + 1000]))
        return started

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

    # -- advancing ----------------------------------------------------------------------------
    def claim_due(self, owner: str, lease: timedelta, limit: int) -> list:
        now = utc_now()
        if self.meta.query_one("SELECT 1 FROM journey_runs WHERE status = 'active' AND wake_at <= ? LIMIT 1",
                               (db_time(now),)) is None:
            return []  # idle: no write lock taken
        with self.meta.transaction() as conn:
            return conn.execute(
                "UPDATE journey_runs SET lease_owner = ?, lease_until = ? WHERE id IN ("
                " SELECT r.id FROM journey_runs r JOIN journeys j ON j.id = r.journey_id"
                " WHERE r.status = 'active' AND r.wake_at <= ? AND (r.lease_until IS NULL OR r.lease_until < ?)"
                " AND j.status IN ('active', 'archived') ORDER BY r.wake_at LIMIT ?) RETURNING *",
                (owner, db_time(now + lease), db_time(now), db_time(now), limit)).fetchall()

    def advance_due(self, owner: str, lease: timedelta, limit: int = 200) -> int:
        runs = self.claim_due(owner, lease, limit)
        for run in runs:
            try:
                self._advance(run, owner)
            except _Lost:
                pass
            except Exception as err:  # e.g. the lake was unreadable for a branch: retry later
                log.exception("journey run %s failed to advance", run["id"])
                self.meta.execute("UPDATE journey_runs SET lease_owner = NULL, lease_until = NULL, wake_at = ?, "
                                  "last_error = ? WHERE id = ? AND lease_owner = ?",
                                  (db_time(utc_now() + RETRY_AFTER_ERROR), f"{type(err).__name__}: {err}",
                                   run["id"], owner))
        return len(runs)

    def _advance(self, run, owner: str) -> None:
        journey_status = self.meta.query_one("SELECT status FROM journeys WHERE id = ?", (run["journey_id"],))[0]
        if journey_status == "archived":
            self._finish(run, owner, run["current_step"], "exited", "journey archived")
            return
        definition = self.definition(run["journey_id"], run["version"])
        steps = {s["id"]: s for s in definition["steps"]}
        step_id = run["current_step"]
        while step_id is not None:
            exit_condition = definition.get("exitCondition")
            if exit_condition and self._holds(run, exit_condition):
                self._finish(run, owner, step_id, "exited", "exit condition met")
                return
            step = steps[step_id]
            kind = step["type"]
            if kind == "exit":
                self._finish(run, owner, step_id, "completed", "exit step", record=step)
                return
            if kind == "send_email":
                step_id = self._send(run, owner, step)
                if step_id is _FAILED:
                    return
            elif kind == "branch":
                taken = self._holds(run, step["condition"])
                nxt = step["then"] if taken else step["else"]
                self._step(run, owner, step, nxt, {"conditionMet": taken, "next": nxt})
                step_id = nxt
            else:  # wait
                now = utc_now()
                if step.get("duration"):
                    d = step["duration"]
                    until = now + timedelta(days=d.get("days", 0), hours=d.get("hours", 0),
                                            minutes=d.get("minutes", 0), seconds=d.get("seconds", 0))
                else:
                    profile = self.sends.profiles.one(run["tenant_id"], run["user_id"]) or {}
                    until = next_time_of_day(now, step["untilTimeOfDay"], profile.get("timezone"))
                self._step(run, owner, step, step["next"], {"until": api_time(db_time(until))}, wake_at=until)
                return
        self._finish(run, owner, None, "completed", None)

    def _step(self, run, owner: str, step: dict, nxt: str | None, outcome: dict, *, wake_at=None,
              effect=None) -> None:
        """Record ``step`` done and move the run to ``nxt`` atomically (see module doc)."""
        now = utc_now()
        with self.meta.transaction() as conn:
            moved = conn.execute(
                "UPDATE journey_runs SET current_step = ?, wake_at = ?, lease_owner = CASE WHEN ? THEN NULL "
                "ELSE lease_owner END, lease_until = CASE WHEN ? THEN NULL ELSE lease_until END "
                "WHERE id = ? AND lease_owner = ? AND current_step = ? AND status = 'active'",
                (nxt, db_time(wake_at or now), wake_at is not None, wake_at is not None, run["id"], owner,
                 step["id"])).rowcount
            if not moved:
                raise _Lost()
            try:
                conn.execute("INSERT INTO journey_run_steps (run_id, step_id, type, outcome, at) VALUES (?,?,?,?,?)",
                             (run["id"], step["id"], step["type"], dumps(outcome), db_time(now)))
            except sqlite3.IntegrityError:
                raise _Lost() from None
            if effect is not None:
                effect(conn, outcome)
                conn.execute("UPDATE journey_run_steps SET outcome = ? WHERE run_id = ? AND step_id = ?",
                             (dumps(outcome), run["id"], step["id"]))

    def _send(self, run, owner: str, step: dict):
        try:
            content_id, _, _ = snapshot_template(self.sends, run["tenant_id"], step["templateId"])
        except SendsError as err:
            self._finish(run, owner, step["id"], "failed", f"step {step['id']}: {err.message}")
            return _FAILED
        send = NewSend(tenant_id=run["tenant_id"], source="journey", source_key=f"{run['id']}:{step['id']}",
                       content_id=content_id, user_id=run["user_id"], to_address=run["address"],
                       template_id=step["templateId"], source_id=run["journey_id"], data=loads(run["data"], {}))

        def enqueue(conn, outcome):
            [send_id] = self.sends.outbound.enqueue([send], conn=conn)
            outcome["sendId"] = send_id

        self._step(run, owner, step, step["next"], {"templateId": step["templateId"]}, effect=enqueue)
        self.sends.wake()
        return step["next"]

    def _finish(self, run, owner: str, step_id: str | None, status: str, reason: str | None,
                record: dict | None = None) -> None:
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            moved = conn.execute(
                "UPDATE journey_runs SET status = ?, exit_reason = ?, finished_at = ?, current_step = NULL, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = 'active' "
                "AND current_step IS ?", (status, reason, now, run["id"], owner, step_id)).rowcount
            if not moved:
                raise _Lost()
            if record is not None:
                conn.execute("INSERT OR IGNORE INTO journey_run_steps (run_id, step_id, type, outcome, at) "
                             "VALUES (?,?,?,'{}',?)", (run["id"], record["id"], record["type"], now))

    def _holds(self, run, condition: dict[str, Any]) -> bool:
        tenant_id, user_id = run["tenant_id"], run["user_id"]
        if condition["type"] == "segment":
            [membership] = self.runtime.membership.memberships(tenant_id, [user_id])
            return condition["segmentId"] in membership.segment_ids
        if condition["type"] == "trait":
            profile = self.sends.profiles.one(tenant_id, user_id) or {}
            name = condition["trait"]
            return compare(profile.get(name), condition["operator"], condition.get("value"), name in profile)
        return self.meta.query_one("SELECT 1 FROM journey_run_events WHERE run_id = ? AND event_type = ?",
                                   (run["id"], condition["eventType"])) is not None


_FAILED = object()
