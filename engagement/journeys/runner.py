"""Journeys' runner: entry (API trigger, accepted events, segment entry) and advancing runs.

Every recipient's run advances on its own. Each step is one SQLite write transaction that
(1) moves the run from that step to the next with a compare-and-set on (lease owner, current
step), (2) inserts the step into ``journey_run_steps`` (primary key run + step) and (3) does
the step's durable effect (an EmailSend row, unique per run + step). So a (journey, run, step)
happens at most once whatever restarts or concurrent workers do; a worker that dies between
steps leaves a lease that runs out, and the next worker continues from the recorded step.
The lease is the run row's own (not a job of engine/jobs.py): the step's compare-and-set must
be on the row it moves (docs/design/query-backends.md 3.5).
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from common.time import api_time, db_time, parse_db_time, utc_now
from engine.errors import Conflict, Unprocessable
from engagement.common import SendsError, dumps, loads
from engagement.journeys.model import compare, filters_match, next_time_of_day, watched_event_types
from engagement.journeys.store import JourneyStore, check_may_send
from engagement.outbound import NewSend
from engagement.recipients import valid_address

if TYPE_CHECKING:
    from engagement.outbound import Outbound
    from engagement.profiles import ProfileDirectory

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = timedelta(seconds=30)


@dataclass(frozen=True)
class Entry:
    """One recipient entering a journey."""

    user_id: str
    trigger_key: str
    data: dict[str, Any]
    address: str | None = None


class _Lost(Exception):
    """The run moved under us (another worker took it over): stop touching it."""


class JourneyRunner:
    def __init__(self, meta, store: JourneyStore, outbound: Outbound, profiles: ProfileDirectory,
                 snapshot: Callable[[int, int], tuple], memberships: Callable[[int, list[str]], list],
                 wake: Callable[[], None]):
        """``snapshot(tenant_id, template_id)``: a template frozen as send content (``Sends.snapshot``);
        ``memberships(tenant_id, user_ids)``: the membership index's answers, one ``Membership`` per user
        (segment conditions);
        ``wake``: tells this process's send worker that there is work."""
        self.meta = meta
        self.store = store
        self.outbound = outbound
        self.profiles = profiles
        self.snapshot = snapshot
        self.memberships = memberships
        self.wake = wake

    # -- entering -------------------------------------------------------------------------
    def start_runs(self, journey_row, entries: Sequence[Entry]) -> list[int]:
        """Start runs for ``entries`` under the journey's re-entry rule, in one transaction.
        Returns the ids of the runs started (entries refused by the rule, or whose trigger_key
        already started a run, are left out)."""
        journey_id = journey_row["id"]
        definition = self.store.definition(journey_id, journey_row["version"])
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
            self.wake()
        return started

    def trigger(self, tenant_id: int, journey_id: int, user_id: str, email: str | None,
                data: dict[str, Any], *, may_send: bool) -> dict[str, Any]:
        """The API entry: one recipient -> a run id."""
        row = self.store.row(tenant_id, journey_id)
        if row["trigger_type"] != "api":
            raise Conflict(f"this journey is entered by its {row['trigger_type']} trigger, not the API",
                           code="not_api_triggered", field="trigger")
        if row["status"] != "active":
            raise Conflict(f"the journey is {row['status']}", code="journey_not_active", field="status")
        check_may_send(self.store.definition(journey_id, row["version"]), may_send, "trigger a journey")
        if email is None:
            profile = self.profiles.one(tenant_id, user_id) or {}
            if valid_address(profile.get("email")) is None:
                raise Unprocessable(f"profile {user_id!r} has no valid email trait; pass email",
                                    code="no_email_address", field="userId")
        started = self.start_runs(row, [Entry(user_id, f"api:{uuid.uuid4().hex}", data, email)])
        if not started:
            raise Conflict("the journey's re-entry rule does not let this recipient in again",
                           code="reentry_blocked", field="userId")
        return self.store.run(tenant_id, journey_id, started[0])

    def on_events(self, tenant_id: int, events) -> int:
        """Accepted events (the runtime subscribes it to the event feed): start runs for matching event
        triggers and remember watched events of recipients whose runs started before this batch. Returns
        the number of journeys whose trigger matched."""
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
            trigger = self.store.definition(journey["id"], journey["version"])["trigger"]
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
                    "SELECT id, journey_id, version, user_id FROM journey_runs WHERE tenant_id = ? "
                    f"AND status = 'active' AND started_at < ? AND user_id IN ({','.join('?' * len(chunk))})",
                    (tenant_id, before, *chunk)):
                watched = watched_event_types(self.store.definition(run["journey_id"], run["version"]))
                inserts.extend((run["id"], t, now) for t in types_by_user[run["user_id"]] & watched)
        if inserts:
            with self.meta.transaction() as conn:
                conn.executemany("INSERT INTO journey_run_events (run_id, event_type, received_at) VALUES (?,?,?) "
                                 "ON CONFLICT (run_id, event_type) DO NOTHING", inserts)

    def on_segment_entered(self, tenant_id: int, segment_id: int, computation_id: int, user_ids: list[str]) -> int:
        """A new computation (the runtime's compute listener): recipients who entered a segment enter journeys
        triggered by it."""
        started = 0
        for journey in self.meta.query("SELECT * FROM journeys WHERE tenant_id = ? AND status = 'active' AND "
                                       "trigger_type = 'segment' AND trigger_segment_id = ?", (tenant_id, segment_id)):
            entries = [Entry(u, f"segment:{computation_id}:{u}", {}) for u in user_ids]
            for start in range(0, len(entries), 1000):
                started += len(self.start_runs(journey, entries[start:start + 1000]))
        return started

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
        definition = self.store.definition(run["journey_id"], run["version"])
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
                    profile = self.profiles.one(run["tenant_id"], run["user_id"]) or {}
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
            content_id, _, _ = self.snapshot(run["tenant_id"], step["templateId"])
        except SendsError as err:
            self._finish(run, owner, step["id"], "failed", f"step {step['id']}: {err.message}")
            return _FAILED
        send = NewSend(tenant_id=run["tenant_id"], source="journey", source_key=f"{run['id']}:{step['id']}",
                       content_id=content_id, user_id=run["user_id"], to_address=run["address"],
                       template_id=step["templateId"], source_id=run["journey_id"], data=loads(run["data"], {}))

        def enqueue(conn, outcome):
            [send_id] = self.outbound.enqueue([send], conn=conn)
            outcome["sendId"] = send_id

        self._step(run, owner, step, step["next"], {"templateId": step["templateId"]}, effect=enqueue)
        self.wake()
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
            [membership] = self.memberships(tenant_id, [user_id])
            return condition["segmentId"] in membership.segment_ids
        if condition["type"] == "trait":
            profile = self.profiles.one(tenant_id, user_id) or {}
            name = condition["trait"]
            return compare(profile.get(name), condition["operator"], condition.get("value"), name in profile)
        return self.meta.query_one("SELECT 1 FROM journey_run_events WHERE run_id = ? AND event_type = ?",
                                   (run["id"], condition["eventType"])) is not None


_FAILED = object()
