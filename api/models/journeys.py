"""The journey document (engagement/journeys/model.py describes it) as pydantic request models.

``JourneyDefinition.definition()`` hands the engine a plain dict: every field with its default, a
step's ``next`` / ``then`` / ``else`` present only when the client sent it (absent = the following
step), which ``engagement.journeys.model.normalize`` resolves and checks.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from api.deps import MAX_ID
from api.models.common import CamelModel
from engagement.journeys.model import STEP_SENDS

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
    """A step type. ``sends`` says whether running it can send email, as engagement.journeys.model's
    ``STEP_SENDS`` states it (the ``allow_sends`` gate asks that table): every step type must say."""

    sends: ClassVar[bool]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "sends" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must say whether it sends (sends = True/False)")


class SendEmailStep(StepModel):
    sends = STEP_SENDS["send_email"]
    id: str = Field(pattern=STEP_ID)
    type: Literal["send_email"]
    template_id: int = Field(ge=1, le=MAX_ID)
    next: str | None = None


class WaitStep(StepModel):
    sends = STEP_SENDS["wait"]
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
    sends = STEP_SENDS["branch"]
    id: str = Field(pattern=STEP_ID)
    type: Literal["branch"]
    condition: Condition
    then: str | None = None
    else_: str | None = Field(None, alias="else")


class ExitStep(StepModel):
    sends = STEP_SENDS["exit"]
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

    def definition(self) -> dict[str, Any]:
        """The document for ``engagement.journeys.model.normalize``: defaults filled in, successors as sent."""
        return {"trigger": self.trigger.model_dump(mode="json", by_alias=True),
                "steps": [_step_doc(step) for step in self.steps],
                "exitCondition": (self.exit_condition.model_dump(mode="json", by_alias=True)
                                  if self.exit_condition else None),
                "reentry": (self.reentry.model_dump(mode="json", by_alias=True, exclude_none=True)
                            if self.reentry else None)}


_SUCCESSORS = {"next": "next", "then": "then", "else_": "else"}


def _step_doc(step: StepModel) -> dict[str, Any]:
    doc = step.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name, key in _SUCCESSORS.items():
        if name in step.model_fields_set:
            doc[key] = getattr(step, name)
    return doc
