"""Fields that end up in an email header (subject, sender and reply-to names and addresses, the
recipient) refuse a CR or LF with a 400 naming the field, on every route whose body has one: the
routes and fields are found in the app's request models, so a new route or field is covered."""
from __future__ import annotations

from typing import get_args, get_origin

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from tests.sends_fixtures import make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

HEADER_FIELDS = {"subject", "fromName", "fromEmail", "replyTo", "to"}
# Fields named otherwise that become a header: the trigger's email is the run's To address.
ALSO = {("POST", "/api/journeys/{journey_id:int}/trigger/"): {"email"}}
EXPECTED = {"/api/templates/", "/api/templates/{template_id:int}/", "/api/brand-kits/", "/api/brand-kits/{kit_id:int}/",
            "/api/emails/", "/api/emails/batch/", "/api/journeys/{journey_id:int}/trigger/"}


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _is_list(annotation) -> bool:
    return get_origin(annotation) is list or any(_is_list(arg) for arg in get_args(annotation))


def _header_paths(model: type[BaseModel], names: set[str], prefix: tuple = ()) -> list[tuple]:
    """Body paths (alias names, 0 for a list item) of the header-bound fields of ``model``."""
    paths = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if alias in names:
            paths.append((*prefix, alias))
        for sub in _models(field.annotation):
            item = (0,) if _is_list(field.annotation) else ()
            paths.extend(_header_paths(sub, names, (*prefix, alias, *item)))
    return paths


def _nest(path: tuple, value):
    body = value
    for part in reversed(path):
        body = [body] if part == 0 else {part: body}
    return body


def _label(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if part == 0 else ("." if out else "") + part
    return out


def header_cases(app) -> list[tuple[str, str, tuple]]:
    cases = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or route.body_field is None:
            continue
        for method in sorted(context.methods):
            names = HEADER_FIELDS | ALSO.get((method, context.path), set())
            for model in _models(route.body_field.field_info.annotation):
                cases.extend((method, context.path, path) for path in _header_paths(model, names))
    return cases


@pytest.mark.parametrize("value", ["Ann\r\nBcc: victim@example.com", "Ann\nX: y", "Ann\r"])
def test_a_line_break_in_a_header_field_is_refused_naming_it(client, app, tenants, runtime, data_dir, value):
    a = tenants.a
    profiles(runtime, a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "Ann"}})
    template = make_template(client, a.headers)
    kit = client.post("/api/brand-kits/", json={"name": "Kit"}, headers=a.headers).json()
    journey = client.post("/api/journeys/", json={"name": "J", "status": "active", "trigger": {"type": "api"},
                                                  "steps": [{"id": "s", "type": "send_email",
                                                             "templateId": template["id"]}]}, headers=a.headers).json()
    ids = {"template_id": template["id"], "kit_id": kit["id"], "journey_id": journey["id"]}
    cases = header_cases(app)
    assert {path for _, path, _ in cases} == EXPECTED
    problems = []
    for method, route, path in cases:
        url = route
        for name, ident in ids.items():
            url = url.replace("{" + name + ":int}", str(ident))
        r = client.request(method, url, json=_nest(path, value), headers=a.headers)
        field = _label(path)
        if r.status_code != 400 or field not in r.json() or "line break" not in r.json()[field][0]:
            problems.append(f"{method} {route} {field}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)
    assert client.get(f"/api/templates/{template['id']}/", headers=a.headers).json()["subject"] == template["subject"]
    assert outbox(data_dir) == [] and runtime.meta.query_one("SELECT count(*) FROM journey_runs")[0] == 0


def test_a_sender_name_without_line_breaks_still_goes_out_encoded(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, {"u1": {"email": "u1@example.com", "first_name": "Ann"}})
    template = make_template(client, a.headers, fromName="Ünïcode Shop, Inc.", fromEmail="shop@example.com")
    sent = client.post("/api/emails/", json={"templateId": template["id"], "userId": "u1"}, headers=a.headers)
    assert sent.status_code == 201, sent.text
    [msg] = outbox(data_dir)
    assert msg["From"].addresses[0].display_name == "Ünïcode Shop, Inc."
    assert msg["From"].addresses[0].addr_spec == "shop@example.com"
