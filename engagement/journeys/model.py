"""The journey document (shaped after Klaviyo flows) and the conditions journeys evaluate. The API
validates it (api/models/journeys.py); here it is a plain dict, normalized for storage.

A journey: a ``trigger`` (an event type with optional property filters, entry into a segment,
or an API call), a list of ``steps``, an optional ``exitCondition`` and a ``reentry`` rule::

    {"trigger": {"type": "event", "eventType": "signup",
                 "filters": [{"property": "plan", "operator": "eq", "value": "pro"}]},
     "steps": [
       {"id": "pause", "type": "wait", "duration": {"hours": 1}},
       {"id": "vip?", "type": "branch", "condition": {"type": "segment", "segmentId": 7},
        "then": "vip", "else": "std"},
       {"id": "vip", "type": "send_email", "templateId": 3, "next": null},
       {"id": "std", "type": "send_email", "templateId": 4}],
     "exitCondition": {"type": "event", "eventType": "order_placed"},
     "reentry": {"mode": "after", "days": 30}}

A step without ``next`` continues with the step after it (``next: null`` or the end of the
list completes the run). Waits take a ``duration`` or ``untilTimeOfDay`` ("HH:MM" in the
profile's ``timezone`` trait, UTC when it has none). Branch conditions: segment membership,
a trait comparison, or whether an event of a type happened since the run started. Step
references must exist and form no cycle (each step runs at most once per run).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engagement.common import SendsError

# Whether running a step of each type can send email: the one fact the ``allow_sends`` gate
# (``can_send``) asks. api/models/journeys.py's step models state theirs from here.
STEP_SENDS: dict[str, bool] = {"send_email": True, "wait": False, "branch": False, "exit": False}


def normalize(definition: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a validated document (api/models/journeys.py ``definition()``): every
    step's successors resolved (``next``; ``then``/``else`` for branches; absent = the step after it,
    None = the run completes), references and acyclicity checked, reentry defaulted (``always`` for
    API-triggered journeys, ``once`` otherwise). Raises SendsError (InvalidInput) naming the field."""
    steps = definition["steps"]
    ids = [s["id"] for s in steps]
    seen: set[str] = set()
    for i, step_id in enumerate(ids):
        if step_id in seen:
            raise SendsError(f"steps[{i}].id", f"duplicate step id {step_id!r}", "duplicate_step_id")
        seen.add(step_id)
    out = []
    for i, step in enumerate(steps):
        doc = dict(step)
        following = ids[i + 1] if i + 1 < len(ids) else None
        if step["type"] == "branch":
            doc.setdefault("then", following)
            doc.setdefault("else", following)
            targets = (("then", doc["then"]), ("else", doc["else"]))
        elif step["type"] == "exit":
            targets = ()
        else:
            doc.setdefault("next", following)
            targets = (("next", doc["next"]),)
        for name, target in targets:
            if target is not None and target not in seen:
                raise SendsError(f"steps[{i}].{name}", f"no step {target!r}", "unknown_step")
        out.append(doc)
    _check_acyclic(out)
    reentry = definition.get("reentry") or {"mode": "always" if definition["trigger"]["type"] == "api" else "once"}
    return {"trigger": definition["trigger"], "steps": out, "exitCondition": definition.get("exitCondition"),
            "reentry": reentry}


def can_send(definition: dict[str, Any]) -> bool:
    """Whether a run of this stored definition can send email (some step's type sends)."""
    return any(STEP_SENDS[step["type"]] for step in definition["steps"])


def successors(step: dict[str, Any]) -> list[str]:
    keys = ("then", "else") if step["type"] == "branch" else ("next",)
    return [step[k] for k in keys if step.get(k) is not None]


def _check_acyclic(steps: list[dict[str, Any]]) -> None:
    by_id = {s["id"]: s for s in steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(step_id: str) -> None:
        state[step_id] = 1
        for nxt in successors(by_id[step_id]):
            if state.get(nxt) == 1:
                index = next(i for i, s in enumerate(steps) if s["id"] == step_id)
                raise SendsError(f"steps[{index}]", f"step {step_id!r} leads back to {nxt!r}: journeys cannot loop",
                                 "journey_cycle")
            if nxt not in state:
                visit(nxt)
        state[step_id] = 2

    for s in steps:
        if s["id"] not in state:
            visit(s["id"])


def watched_event_types(definition: dict[str, Any]) -> set[str]:
    """Event types whose occurrence a run must remember (event branches, the exit condition)."""
    conditions = [s["condition"] for s in definition["steps"] if s["type"] == "branch"]
    if definition.get("exitCondition"):
        conditions.append(definition["exitCondition"])
    return {c["eventType"] for c in conditions if c["type"] == "event"}


# -- comparisons ----------------------------------------------------------------------
def compare(actual: Any, operator: str, expected: Any, present: bool = True) -> bool:
    """A property/trait comparison; mismatched types compare false rather than raising."""
    if operator == "exists":
        return present and actual is not None
    if operator == "not_exists":
        return not present or actual is None
    if not present:
        return operator == "neq"
    try:
        if operator == "eq":
            return actual == expected
        if operator == "neq":
            return actual != expected
        if operator == "contains":
            return isinstance(actual, (str, list)) and expected in actual
        if operator == "in":
            return isinstance(expected, list) and actual in expected
        if isinstance(actual, bool) or isinstance(expected, bool):
            return False
        return {"gt": actual > expected, "gte": actual >= expected,
                "lt": actual < expected, "lte": actual <= expected}[operator]
    except TypeError:
        return False


def filters_match(filters: list[dict[str, Any]], properties: dict[str, Any]) -> bool:
    return all(compare(properties.get(f["property"]), f["operator"], f.get("value"), f["property"] in properties)
               for f in filters)


_HH_MM = re.compile(r"^(\d\d):(\d\d)$")


def next_time_of_day(now: datetime, hh_mm: str, timezone: str | None) -> datetime:
    """The first instant after ``now`` (aware UTC) when the recipient's clock shows ``hh_mm``."""
    try:
        zone = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    hours, minutes = (int(x) for x in _HH_MM.match(hh_mm).groups())
    local = now.astimezone(zone)
    target = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if target <= local:
        target = (local + timedelta(days=1)).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return target.astimezone(now.tzinfo)
