"""Journeys (Klaviyo flows): CRUD with status draft/active/paused/archived, the API trigger for
one recipient, and run status with step history.

The journey document is described in engagement/journeys/model.py (its request models are in
api/models/journeys.py). ``PATCH`` may change ``name``, ``status`` and any part of the definition
(the rest is kept); a changed definition is a new version that only new runs use. ``DELETE`` archives (active runs exit). The trigger and
create POSTs accept ``Idempotency-Key``.

A key without ``allowSends`` answers 403 ``sends_not_allowed`` when it would make a journey send:
activating one that can send (create active, PATCH into active), changing an active one into one
that can send, or triggering one (engagement/journeys.py).
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field, ValidationError

from api.deps import Principal, check_id, get_runtime, id_param, require
from api.errors import _loc_to_path
from api.models.common import CamelModel
from api.models.journeys import Condition, JourneyDefinition, Reentry, Step, Trigger
from api.pagination import OffsetPage, offset_params, offset_response
from api.routers._sends_common import HeaderText, errors, idempotent, json_response
from engine.runtime import Runtime
from engine.errors import InvalidInput
from engagement.recipients import normalize_address

router = APIRouter(prefix="/api/journeys", tags=["journeys"])
READ = require("journeys:read")
WRITE = require("journeys:write")
DEFINITION_FIELDS = ("trigger", "steps", "exitCondition", "reentry")


class JourneyCreate(JourneyDefinition):
    name: str = Field(min_length=1, max_length=200)
    status: Literal["draft", "active"] = "draft"


class JourneyUpdate(CamelModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    status: Literal["draft", "active", "paused", "archived"] | None = None
    trigger: Trigger | None = None
    steps: list[Step] | None = Field(None, min_length=1, max_length=100)
    exit_condition: Condition | None = None
    reentry: Reentry | None = None


class TriggerRequest(CamelModel):
    user_id: str = Field(min_length=1, max_length=256)
    email: HeaderText | None = Field(None, max_length=320)
    data_variables: dict[str, Any] = Field(default_factory=dict)


journey_id_param = id_param("journey", "journey_id")


@router.get("/")
def list_journeys(request: Request, page: OffsetPage = Depends(offset_params),
                  status: Literal["draft", "active", "paused", "archived"] | None = None,
                  principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.journeys.list(principal.tenant_id, status, page.limit, page.offset)
    return offset_response(request, page, count, rows)


@router.post("/", status_code=201, responses=errors(409))
def create_journey(body: JourneyCreate, request: Request, principal: Principal = Depends(WRITE),
                   runtime: Runtime = Depends(get_runtime)):
    return idempotent(request, principal, runtime, body.doc(), lambda: (201, runtime.sends.journeys.create(
        principal.tenant_id, body.name, body.definition(), body.status, may_send=principal.allow_sends)))


@router.get("/{journey_id:int}/")
def get_journey(journey_id: int = Depends(journey_id_param), principal: Principal = Depends(READ),
                runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.journeys.get(principal.tenant_id, journey_id))


@router.patch("/{journey_id:int}/", responses=errors(409))
def update_journey(body: JourneyUpdate, journey_id: int = Depends(journey_id_param),
                   principal: Principal = Depends(WRITE), runtime: Runtime = Depends(get_runtime)):
    journeys = runtime.sends.journeys
    changes = body.doc()
    document = None
    if any(field in changes for field in DEFINITION_FIELDS):
        current = journeys.get(principal.tenant_id, journey_id)
        merged = {field: current[field] for field in DEFINITION_FIELDS}
        merged.update({field: changes[field] for field in DEFINITION_FIELDS if field in changes})
        try:
            document = JourneyDefinition.model_validate(merged).definition()
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidInput(first["msg"], code="validation_error", field=_loc_to_path(tuple(first["loc"]))) from None
    return json_response(journeys.update(principal.tenant_id, journey_id, name=changes.get("name"), document=document,
                                         status=changes.get("status"), may_send=principal.allow_sends))


@router.delete("/{journey_id:int}/", responses=errors(409))
def archive_journey(journey_id: int = Depends(journey_id_param), principal: Principal = Depends(WRITE),
                    runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.journeys.update(principal.tenant_id, journey_id, status="archived",
                                                       may_send=principal.allow_sends))


@router.post("/{journey_id:int}/trigger/", status_code=202, responses=errors(409))
def trigger_journey(body: TriggerRequest, request: Request, journey_id: int = Depends(journey_id_param),
                    principal: Principal = Depends(WRITE), runtime: Runtime = Depends(get_runtime)):
    """Enter one recipient into an API-triggered journey; answers the new run (poll it by id)."""
    email = None
    if body.email is not None:
        email = normalize_address(body.email)
    return idempotent(request, principal, runtime, body.doc(), lambda: (202, runtime.sends.journeys_runner.trigger(
        principal.tenant_id, journey_id, body.user_id, email, body.data_variables, may_send=principal.allow_sends)))


@router.get("/{journey_id:int}/runs/")
def list_runs(request: Request, journey_id: int = Depends(journey_id_param), page: OffsetPage = Depends(offset_params),
              status: Literal["active", "completed", "exited", "failed"] | None = None,
              principal: Principal = Depends(READ), runtime: Runtime = Depends(get_runtime)):
    count, rows = runtime.sends.journeys.runs(principal.tenant_id, journey_id, status, page.limit, page.offset)
    return offset_response(request, page, count, rows)


@router.get("/{journey_id:int}/runs/{run_id:int}/")
def get_run(run_id: int, journey_id: int = Depends(journey_id_param), principal: Principal = Depends(READ),
            runtime: Runtime = Depends(get_runtime)):
    return json_response(runtime.sends.journeys.run(principal.tenant_id, journey_id, check_id("run", run_id)))
