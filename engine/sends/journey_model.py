"""The journey document (shaped after Klaviyo flows) and the conditions journeys evaluate.

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
from typing import Annotated, Any, ClassVar, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from common.ids import MAX_ID
from engine.sends.common import CamelModel, SendsError

STEP_ID = r"^[A-Za-z0-9_.:?!-]{1,64}$"
MAX_STEPS = 100
Operator = Literal["eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "exists", "not_exists"]


class Filter(CamelModel):
    property: str = Field(min_length=1, max_length=255)
    operator: Operator = "eq"
    value: Any = None


class EventTrigger(CamelModel):
    type: Literal["event"]
    event_type: str = Field(min_length=1, max_length=255)
    filters: list[Filter] = Field(default_factory=list, max_length=20)


class SegmentTrigger(CamelModel):
    type: Literal["segment"]
    segment_id: int = Field(ge=1, le=MAX_ID)


class ApiTrigger(CamelModel):
    type: Literal["api"]


Trigger = Annotated[EventTrigger | SegmentTrigger | ApiTrigger, Field(discriminator="type")]


class SegmentCondition(CamelModel):
    type: Literal["segment"]
    segment_id: int = Field(ge=1, le=MAX_ID)


class TraitCondition(CamelModel):
    type: Literal["trait"]
    trait: str = Field(min_length=1, max_length=255)
    operator: Operator = "eq"
    value: Any = None


class EventCondition(CamelModel):
    """True when the recipient had an event of ``eventType`` since the run started."""

    type: Literal["event"]
    event_type: str = Field(min_length=1, max_length=255)


Condition = Annotated[SegmentCondition | TraitCondition | EventCondition, Field(discriminator="type")]


class Duration(CamelModel):
    days: float = Field(0, ge=0, le=366)
    hours: float = Field(0, ge=0, le=24 * 366)
    minutes: float = Field(0, ge=0, le=60 * 24 * 366)
    seconds: float = Field(0, ge=0, le=86400 * 366)

    def delta(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds)

    @model_validator(mode="after")
    def _positive(self):
        if self.delta() <= timedelta(0):
            raise ValueError("a wait must last more than zero")
        return self


class StepModel(CamelModel):
    """A step type. ``sends`` says whether running it can send email: the one fact the
    ``allow_sends`` gate (``can_send``) asks, so every step type must state it (a new sending
    step is gated without a list to update)."""

    sends: ClassVar[bool]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "sends" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must say whether it sends (sends = True/False)")


class SendEmailStep(StepModel):
    sends = True
    id: str = Field(pattern=STEP_ID)
    type: Literal["send_email"]
    template_id: int = Field(ge=1, le=MAX_ID)
    next: str | None = None


class WaitStep(StepModel):
    sends = False
    id: str = Field(pattern=STEP_ID)
    type: Literal["wait"]
    duration: Duration | None = None
    until_time_of_day: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    next: str | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.duration is None) == (self.until_time_of_day is None):
            raise ValueError("give exactly one of duration or untilTimeOfDay")
        return self


class BranchStep(StepModel):
    sends = False
    id: str = Field(pattern=STEP_ID)
    type: Literal["branch"]
    condition: Condition
    then: str | None = None
    else_: str | None = Field(None, alias="else")


class ExitStep(StepModel):
    sends = False
    id: str = Field(pattern=STEP_ID)
    type: Literal["exit"]


Step = Annotated[SendEmailStep | WaitStep | BranchStep | ExitStep, Field(discriminator="type")]
# "send_email" -> SendEmailStep, ...: stored definitions name their steps' types.
STEP_TYPES: dict[str, type[StepModel]] = {get_args(cls.model_fields["type"].annotation)[0]: cls
                                          for cls in get_args(get_args(Step)[0])}


class Reentry(CamelModel):
    mode: Literal["once", "after", "always"]
    days: float | None = Field(None, gt=0, le=3650)

    @model_validator(mode="after")
    def _days(self):
        if (self.mode == "after") != (self.days is not None):
            raise ValueError("days is required with mode 'after' and only then")
        return self


class JourneyDefinition(CamelModel):
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    exit_condition: Condition | None = None
    reentry: Reentry | None = None


def normalize(definition: JourneyDefinition) -> dict[str, Any]:
    """The stored form: every step's successors resolved (``next``; ``then``/``else`` for
    branches; None = the run completes), references and acyclicity checked, reentry defaulted
    (``always`` for API-triggered journeys, ``once`` otherwise)."""
    steps = definition.steps
    ids = [s.id for s in steps]
    seen: set[str] = set()
    for i, step_id in enumerate(ids):
        if step_id in seen:
            raise SendsError(f"steps[{i}].id", f"duplicate step id {step_id!r}", "duplicate_step_id")
        seen.add(step_id)
    out = []
    for i, step in enumerate(steps):
        doc = step.model_dump(mode="json", by_alias=True, exclude_none=True)
        following = ids[i + 1] if i + 1 < len(ids) else None
        if isinstance(step, BranchStep):
            doc["then"] = step.then if "then" in step.model_fields_set else following
            doc["else"] = step.else_ if "else_" in step.model_fields_set else following
            targets = (("then", doc["then"]), ("else", doc["else"]))
        elif isinstance(step, ExitStep):
            targets = ()
        else:
            doc["next"] = step.next if "next" in step.model_fields_set else following
            targets = (("next", doc["next"]),)
        for name, target in targets:
            if target is not None and target not in seen:
                raise SendsError(f"steps[{i}].{name}", f"no step {target!r}", "unknown_step")
        out.append(doc)
    _check_acyclic(out)
    reentry = definition.reentry or Reentry(mode="always" if isinstance(definition.trigger, ApiTrigger) else "once")
    return {"trigger": definition.trigger.model_dump(mode="json", by_alias=True),
            "steps": out,
            "exitCondition": (definition.exit_condition.model_dump(mode="json", by_alias=True)
                              if definition.exit_condition else None),
            "reentry": reentry.model_dump(mode="json", by_alias=True, exclude_none=True)}


def can_send(definition: dict[str, Any]) -> bool:
    """Whether a run of this stored definition can send email (some step's type sends)."""
    return any(STEP_TYPES[step["type"]].sends for step in definition["steps"])


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
