"""``allow_sends`` for every route of the app, enumerated from ``app.routes`` like the tenancy
matrix (tests/test_api_tenancy_matrix.py), so a new route that can send is caught.

A key with every scope but ``allow_sends=false`` calls each route once, with a body that makes the
route do its work, in a world where sending is one step away for every route: an active sending
journey of each trigger kind (API, the event the events route posts, the segment a computation
newly enters), a draft sending journey, prepared broadcasts. After each call the background
work (compute jobs, exports, journey/send worker) runs to the end. Then:

* a route in ``GATED`` answers 403 ``sends_not_allowed`` and changes nothing; the same request
  with a send-enabled key (the control) succeeds and makes an email, or a journey that can send;
* a route in ``ENTERS_ACTIVE_JOURNEYS`` may cause sends (the reason says why that is allowed);
* every other route answers 2xx/3xx (or the refusal listed in ``EXPECTED_REFUSALS``), creates no
  email, and activates or changes no active journey.

A new route needs a body here (``bodies``) if ``{}`` is not one; if it can send, it must be gated
(and listed in ``GATED``) or listed with a reason.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.accounts import SCOPES
from engine.runtime import Runtime
from engine.settings import Settings
from tests.api_fixtures import _TEMPLATE_FILES, TenantCreds
from tests.api_world_fixtures import DEFINITION, EMAIL, build_resources, seed_lake
from tests.sends_fixtures import drain, make_journey
from tests.test_api_tenancy_matrix import BODIES, UNSCOPED_ROUTES, RouteSpec, route_specs

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

# The request itself would send (or make a journey send): refused without allow_sends.
GATED = {
    ("POST", "/api/emails/"), ("POST", "/api/emails/batch/"),
    ("POST", "/api/broadcasts/send-prepared/"), ("POST", "/api/broadcasts/"),
    ("POST", "/api/journeys/"),                       # created active, with a send step
    ("PATCH", "/api/journeys/{journey_id}/"),         # an active journey's definition changed
    ("POST", "/api/journeys/{journey_id}/trigger/"),  # an active journey that sends
}
# Sends these cause come from journeys that a send-enabled credential activated: the
# activation decided that entries by events and segment computations send (the seed's
# events.track "triggers any matching active Journeys"); gating them on the caller would make
# an ingest key without allow_sends silently skip the tenant's journeys.
ENTERS_ACTIVE_JOURNEYS = {
    ("POST", "/api/events/"): "an event enters the active journeys it triggers",
    ("POST", "/api/segments/{segment_id}/compute/"): "recipients entering the segment enter its journeys",
}
# Refusals that are the route's own business logic in this world, with the reason.
EXPECTED_REFUSALS = {
    ("POST", "/api/assets/{asset_id}/finalize/"): (409, "the world's asset is an external URL, not an upload"),
}
EVENT_TYPE = BODIES[("POST", "/api/events/")]["event_type"]


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    a: TenantCreds
    ids: dict
    specs: list[RouteSpec]


def bodies(ids: dict) -> dict[tuple[str, str], object]:
    """A body that lets each writing route do its work (``{}`` where none is listed)."""
    template, segment = ids["template_id"], ids["segment_id"]
    send = [{"id": "send", "type": "send_email", "templateId": template}]
    return {
        **BODIES,
        ("POST", "/api/segments/preview/"): {"definition": DEFINITION},
        ("POST", "/api/segments/explain/"): {"definition": DEFINITION, "user_id": ids["user_id"]},
        ("POST", "/api/segments/{segment_id}/impact/"): {"definition": DEFINITION},
        ("POST", "/api/segments/{segment_id}/export/"): {"format": "csv"},
        ("POST", "/api/templates/"): {"name": "T", "subject": "Hi", "text": "Hi", "purpose": "transactional"},
        ("POST", "/api/brand-kits/"): {"name": "K"},
        ("POST", "/api/assets/"): {"url": "https://cdn.example.com/a.png", "name": "A", "contentType": "image/png"},
        ("POST", "/api/assets/uploads/"): {"filename": "a.png", "contentType": "image/png", "size": 10},
        ("POST", "/api/emails/"): {"templateId": template, "userId": ids["user_id"]},
        ("POST", "/api/emails/batch/"): {"emails": [{"templateId": template, "to": "batch@example.com"}]},
        ("POST", "/api/journeys/"): {"name": "J", "status": "active", "trigger": {"type": "api"}, "steps": send},
        ("PATCH", "/api/journeys/{journey_id}/"): {"steps": [{**send[0], "id": "send-again"}]},
        ("POST", "/api/journeys/{journey_id}/trigger/"): {"userId": ids["user_id"]},
        ("POST", "/api/broadcasts/prepare/"): {"templateId": template, "audience": {"segmentId": segment}},
        ("POST", "/api/broadcasts/send-prepared/"): {"preparedSendId": ids["redeemable_id"]},
        ("POST", "/api/broadcasts/"): {"templateId": template, "audience": {"segmentId": segment}},
        ("POST", "/api/recipients/feedback/"): {"type": "hard_bounce", "email": "gone@example.com"},
        ("PUT", "/api/recipients/subscription/"): {"email": "someone@example.com", "status": "subscribed"},
    }


QUERIES = {
    ("GET", "/api/recipients/subscription/"): {"email": "someone@example.com"},
    ("DELETE", "/api/recipients/suppressions/"): {"email": "gone@example.com"},  # suppressed by feedback
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, _accounts_template):
    template, specs = _accounts_template
    data = tmp_path_factory.mktemp("send-permission") / "data"
    data.mkdir()
    for name in _TEMPLATE_FILES:
        shutil.copyfile(template / name, data / name)
    runtime = Runtime(Settings(data_dir=data, run_workers=False))
    app = create_app(runtime.settings, runtime=runtime)
    a = TenantCreds(runtime=runtime, **specs["a"])
    with TestClient(app, raise_server_exceptions=False) as client:
        ids = build_resources(client, runtime, a)
        send = [{"id": "send", "type": "send_email", "templateId": ids["template_id"]}]
        for trigger in ({"type": "event", "eventType": EVENT_TYPE},
                        {"type": "segment", "segmentId": ids["segment_id"]}):
            make_journey(client, a.headers, status="active", trigger=trigger, steps=send)
        seed_lake(runtime, a.tenant_id, "late-joiner")  # enters the segment at its next computation
        journey = make_journey(client, a.headers, status="active", trigger={"type": "api"}, steps=send)
        ids["journey_id"] = journey["id"]
        run = client.post(f"/api/journeys/{journey['id']}/trigger/", json={"userId": ids["user_id"]},
                          headers=a.headers)
        ids["run_id"] = run.json()["id"]
        make_journey(client, a.headers, status="draft", trigger={"type": "api"}, steps=send)
        ids["redeemable_id"] = client.post("/api/broadcasts/prepare/", json={
            "templateId": ids["template_id"], "audience": {"segmentId": ids["segment_id"]}},
            headers=a.headers).json()["id"]
        settle(runtime)
        yield World(client, runtime, a, ids, route_specs(app))
    runtime.stop()
    runtime.meta.close()


def settle(runtime) -> None:
    """Run every kind of background work to the end (what a server's workers would do)."""
    for _ in range(5):
        runtime.compute.run_pending()
        runtime.exports.run_pending()
        drain(runtime)


def sends(runtime) -> int:
    return runtime.meta.query_one("SELECT count(*) FROM email_sends")[0]


def active_journeys(runtime) -> set[tuple[int, int]]:
    """(id, version) of every active journey: a new pair is an activation or a changed definition."""
    return {(r[0], r[1]) for r in runtime.meta.query("SELECT id, version FROM journeys WHERE status = 'active'")}


def request(world: World, spec: RouteSpec, headers: dict):
    path = spec.path
    for name in spec.params:
        path = path.replace("{" + name + "}", str(world.ids[name]))
    query = {**spec.query, **{name: world.ids[name] for name in spec.query_ids}, **QUERIES.get(spec.key, {})}
    body = bodies(world.ids).get(spec.key, {}) if spec.method in ("POST", "PUT", "PATCH") else None
    return world.client.request(spec.method, path, params=query, json=body, headers=headers,
                                follow_redirects=False)


def test_every_route_that_can_send_needs_allow_sends(world):
    runtime = world.runtime
    no_sends = world.a.key_headers(*SCOPES, allow_sends=False)
    may_send = world.a.headers
    specs = [s for s in world.specs if s.key not in UNSCOPED_ROUTES]  # no key: allow_sends is a key's
    specs.sort(key=lambda s: s.method == "DELETE")  # destroy the world's resources last
    listed = GATED | set(ENTERS_ACTIVE_JOURNEYS) | set(EXPECTED_REFUSALS)
    stale = listed - {s.key for s in specs}
    assert not stale, f"listed routes that no longer exist: {stale}"
    problems = []
    for spec in specs:
        label = f"{spec.method} {spec.path}"
        before_sends, before_active = sends(runtime), active_journeys(runtime)
        r = request(world, spec, no_sends)
        settle(runtime)
        sent, activated = sends(runtime) - before_sends, active_journeys(runtime) - before_active
        if spec.key in GATED:
            if r.status_code != 403 or r.json().get("code") != "sends_not_allowed":
                problems.append(f"{label} without allow_sends: {r.status_code} {r.text[:200]}")
            if sent or activated:
                problems.append(f"{label} without allow_sends still made {sent} email(s), activated {activated}")
            control = request(world, spec, may_send)
            settle(runtime)
            if control.status_code >= 300:
                problems.append(f"{label} control with allow_sends: {control.status_code} {control.text[:200]}")
            elif sends(runtime) == before_sends and active_journeys(runtime) == before_active:
                problems.append(f"{label} control sent nothing: the request does not exercise a send")
            continue
        expected = EXPECTED_REFUSALS.get(spec.key, (None,))[0]
        if (r.status_code >= 400 or r.status_code == 0) and r.status_code != expected:
            problems.append(f"{label}: {r.status_code} {r.text[:200]} (give it a body that works in bodies())")
        if activated:
            problems.append(f"{label} without allow_sends activated or changed active journeys {activated}")
        if sent and spec.key not in ENTERS_ACTIVE_JOURNEYS:
            problems.append(f"{label} without allow_sends made {sent} email(s): gate it (GATED) or list it "
                            f"in ENTERS_ACTIVE_JOURNEYS with the reason")
        if not sent and spec.key in ENTERS_ACTIVE_JOURNEYS:
            problems.append(f"{label} sent nothing: the world does not exercise its journeys")
    assert not problems, "\n".join(problems)


def test_the_world_sends_to_its_user(world):
    """The oracle above counts EmailSend rows; the world's user really gets mail."""
    rows = world.runtime.meta.query("SELECT DISTINCT to_address FROM email_sends WHERE status = 'sent'")
    assert EMAIL in {r[0] for r in rows}
