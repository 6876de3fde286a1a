"""Tenancy and scopes for every route of the app, enumerated from ``app.routes`` so a new route is
covered (or must be listed here with a reason) automatically.

* Tenancy: every route with an id parameter (path, or a required query id like ``export_id``)
  answers 404 to tenant B's credentials (ApiKey and JWT) on tenant A's ids, also when B's own
  parent id is combined with A's child id; tenant A's own credential on the same request is the
  control (not 404), so the 404 is proven to come from tenancy. DELETE routes are not run as A
  (the module shares one world); instead A's resource must still be readable after B's attempts.
* Scopes: a key holding every scope except the route's answers 403 ``missing_scope``; a viewer
  JWT answers 403 on routes needing a write scope; ``sends:write`` also needs ``allow_sends``.

One world (one resource of each kind per tenant, tests/api_world_fixtures.py) is shared by the
module; failures are collected per route and reported together.
"""
from __future__ import annotations

import inspect
import re
import shutil
from urllib.parse import quote
from dataclasses import dataclass, field

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.app import create_app
from api.pagination import MAX_OFFSET, encode_cursor, offset_params
from engine.accounts import ALL_SCOPES
from engine.runtime import Runtime
from engine.settings import Settings
from tests.api_fixtures import _TEMPLATE_FILES, TenantCreds
from tests.api_world_fixtures import build_resources

pytest_plugins = ["tests.api_fixtures"]

PARAM = re.compile(r"{([a-zA-Z_]+)(?::[a-z]+)?}")

# Routes whose path parameter is a capability token, not a tenant-owned id: the secret token is
# the credential (no tenant credential is consulted), so "another tenant's id" does not apply.
CAPABILITY_ROUTES = {
    ("PUT", "/api/assets/uploads/{token}/"): "upload URL; the signed token names the pending asset",
    ("GET", "/api/assets/files/{public_token}/{filename}"): "public asset URL embedded in sent emails",
    ("GET", "/api/recipients/unsubscribe/{token}/"): "signed unsubscribe link from an email",
    ("POST", "/api/recipients/unsubscribe/{token}/"): "RFC 8058 one-click unsubscribe (no login)",
    ("GET", "/api/recipients/open/{token}.gif"): "open-tracking pixel",
    ("GET", "/api/recipients/click/{token}/"): "click-tracking redirect",
}
# Routes that need no scope, with the reason.
UNSCOPED_ROUTES = {
    ("POST", "/api/auth/token/"): "login: the body's email and password are the credential",
    ("POST", "/api/auth/token/refresh/"): "the body's refresh token is the credential",
    ("GET", "/api/auth/me/"): "who-am-I: any valid credential may ask about itself",
    ("GET", "/healthz"): "liveness for load balancers: no credential, no tenant data",
    ("GET", "/readyz"): "readiness for load balancers: no credential, no tenant data (check names only)",
    ("GET", "/metrics"): "Prometheus scrape: SEGOPS_METRICS_TOKEN or a SEGOPS_METRICS_CLIENTS address; no tenant data",
    **CAPABILITY_ROUTES,
}
# Per-parent ordinals, not global ids: B's segment has a version 1 too.
ORDINAL_PARAMS = {"version"}
# Bodies that pass validation, so only tenancy (or scope) can refuse the request.
BODIES = {
    ("POST", "/api/journeys/{journey_id}/trigger/"): {"userId": "someone"},
    ("POST", "/api/events/"): {"user_id": "u", "event_type": "x"},
    ("POST", "/api/events/identify/"): {"user_id": "u", "traits": {"a": 1}},
    ("POST", "/api/segments/"): {"name": "x"},
    ("POST", "/api/segments/preview/"): {"definition": {"logic": "AND", "conditions": []}},
    ("POST", "/api/segments/membership/"): {"user_ids": ["u"]},
    ("POST", "/api/keys/"): {"name": "k", "scopes": ["segments:read"]},
}
# Routes that check their scope in the handler rather than as a dependency, with the reason.
SCOPES_IN_HANDLER = {
    # Answered by a pure ASGI middleware before routing (api/routers/membership.py, the hot path);
    # the route publishes it in OpenAPI and shares the handler's check.
    ("GET", "/api/segments/membership/"): ("all", {"membership:read"}),
}
# Required query parameters named *_id that are not tenant-owned resources, with the reason.
NOT_RESOURCE_IDS = {
    "user_id": "a membership lookup answers for any user id (an unknown user is in no segment); "
               "see test_membership_lookup_reveals_nothing_of_other_tenants",
}


@dataclass
class RouteSpec:
    method: str
    path: str                      # with converters stripped: /api/segments/{segment_id}/
    params: list[str]              # path parameter names
    query_ids: list[str]           # required query parameters that are ids
    scopes: tuple[str, set[str]] | None  # ("all" | "any", scopes) or None
    query: dict = field(default_factory=dict)
    offset_paginated: bool = False
    int_params: list[str] = field(default_factory=list)  # integer path parameters

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def _scope_requirement(dependant) -> tuple[str, set[str]] | None:
    """The scopes of ``require(...)`` / ``any_scope(...)`` in a route's dependency tree."""
    found: list[tuple[str, set[str]]] = []

    def walk(dep):
        for sub in dep.dependencies:
            qualname = getattr(sub.call, "__qualname__", "")
            if qualname in ("require.<locals>.dependency", "any_scope.<locals>.dependency"):
                kind = "all" if qualname.startswith("require") else "any"
                found.append((kind, set(inspect.getclosurevars(sub.call).nonlocals["scopes"])))
            walk(sub)

    walk(dependant)
    if not found:
        return None
    assert len(found) == 1, f"several scope dependencies: {found}"
    return found[0]


def _query_params(dependant) -> list:
    return [*dependant.query_params, *(p for sub in dependant.dependencies for p in _query_params(sub))]


def _path_params(dependant) -> list:
    return [*dependant.path_params, *(p for sub in dependant.dependencies for p in _path_params(sub))]


def _uses(dependant, call) -> bool:
    return any(sub.call is call or _uses(sub, call) for sub in dependant.dependencies)


def route_specs(app) -> list[RouteSpec]:
    specs = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):  # /openapi.json, /docs, /redoc
            continue
        dependant = context.dependant  # as included (with any router-level dependencies)
        path = PARAM.sub(lambda m: "{" + m.group(1) + "}", context.path)
        query_ids = [p.name for p in _query_params(dependant)
                     if p.field_info.is_required() and p.name.endswith("_id") and p.name not in NOT_RESOURCE_IDS]
        required_query = {p.name: "u" for p in _query_params(dependant)
                          if p.field_info.is_required() and p.name in NOT_RESOURCE_IDS}
        int_params = [p.name for p in _path_params(dependant) if p.field_info.annotation is int]
        for method in sorted(context.methods - {"HEAD"}):
            scopes = _scope_requirement(dependant) or SCOPES_IN_HANDLER.get((method, path))
            specs.append(RouteSpec(method, path, PARAM.findall(path), query_ids, scopes, required_query,
                                   offset_paginated=_uses(dependant, offset_params), int_params=int_params))
    return specs


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    a: TenantCreds
    b: TenantCreds
    ids_a: dict
    ids_b: dict
    specs: list[RouteSpec]


@pytest.fixture(scope="module")
def world(tmp_path_factory, _accounts_template):
    template, specs = _accounts_template
    data = tmp_path_factory.mktemp("tenancy") / "data"
    data.mkdir()
    for name in _TEMPLATE_FILES:
        shutil.copyfile(template / name, data / name)
    runtime = Runtime(Settings(data_dir=data, run_workers=False))
    app = create_app(runtime.settings, runtime=runtime)
    a, b = (TenantCreds(runtime=runtime, **specs[letter]) for letter in ("a", "b"))
    with TestClient(app, raise_server_exceptions=False) as client:
        ids_a = build_resources(client, runtime, a, user_id="only-in-a")
        ids_b = build_resources(client, runtime, b, user_id="only-in-b")
        yield World(client, runtime, a, b, ids_a, ids_b, route_specs(app))
    runtime.stop()
    runtime.meta.close()


def call(world: World, spec: RouteSpec, ids: dict, headers: dict, query: dict | None = None):
    path = spec.path
    for name in spec.params:
        path = path.replace("{" + name + "}", str(ids[name]))
    query = {**spec.query, **{name: ids[name] for name in spec.query_ids}, **(query or {})}
    body = BODIES.get(spec.key, {}) if spec.method in ("POST", "PUT", "PATCH") else None
    return world.client.request(spec.method, path, params=query, json=body, headers=headers,
                                follow_redirects=False)


def test_every_route_is_classified(world):
    """Each route needs a scope or is listed with a reason; each id parameter is one we can fill."""
    problems = []
    for spec in world.specs:
        if spec.scopes is None and spec.key not in UNSCOPED_ROUTES:
            problems.append(f"{spec.method} {spec.path}: no scope dependency and no reason in UNSCOPED_ROUTES")
        if spec.key in CAPABILITY_ROUTES:
            continue
        unknown = [p for p in spec.params + spec.query_ids if p not in world.ids_a]
        if unknown:
            problems.append(f"{spec.method} {spec.path}: no resource for {unknown} (extend build_resources)")
    stale = (set(UNSCOPED_ROUTES) | set(SCOPES_IN_HANDLER)) - {spec.key for spec in world.specs}
    assert not stale, f"listed routes that no longer exist: {stale}"
    assert not problems, "\n".join(problems)


def _id_routes(world: World) -> list[RouteSpec]:
    return [s for s in world.specs if (s.params or s.query_ids) and s.key not in CAPABILITY_ROUTES]


def test_other_tenants_ids_answer_404(world):
    problems = []
    b_credentials = {"B ApiKey": world.b.headers, "B JWT": world.b.jwt_headers()}
    readers = {s.path: s for s in world.specs if s.method == "GET"}
    for spec in _id_routes(world):
        label = f"{spec.method} {spec.path}"
        for name, headers in b_credentials.items():
            r = call(world, spec, world.ids_a, headers)
            if r.status_code != 404 or r.json().get("code") != "not_found":
                problems.append(f"{label} with {name} on A's ids: {r.status_code} {r.text[:200]}")
        # B's own parent with one of A's child ids (e.g. B's segment, A's job).
        id_params = [p for p in spec.params + spec.query_ids if p not in ORDINAL_PARAMS]
        if len(id_params) > 1:
            for foreign in id_params:
                mixed = {**world.ids_b, foreign: world.ids_a[foreign]}
                r = call(world, spec, mixed, world.b.headers)
                if r.status_code != 404:
                    problems.append(f"{label} with B's ids but A's {foreign}: {r.status_code} {r.text[:200]}")
        if spec.method == "DELETE":  # the control must not destroy: A's resource is still there
            getter = readers.get(spec.path)
            if getter is not None and (r := call(world, getter, world.ids_a, world.a.headers)).status_code != 200:
                problems.append(f"{label}: A's resource gone after B's attempts: {r.status_code} {r.text[:200]}")
            continue
        control = call(world, spec, world.ids_a, world.a.headers)
        if control.status_code == 404 or control.status_code >= 500:
            problems.append(f"{label} control (A on A's ids): {control.status_code} {control.text[:200]}")
    assert not problems, "\n".join(problems)


def test_a_key_lacking_the_routes_scope_answers_403(world):
    problems = []
    keys: dict[frozenset, dict] = {}

    def key_without(scopes: set[str], allow_sends: bool = True) -> dict:
        granted = frozenset(ALL_SCOPES - scopes)
        if (granted, allow_sends) not in keys:
            keys[granted, allow_sends] = world.a.key_headers(*sorted(granted), allow_sends=allow_sends)
        return keys[granted, allow_sends]

    viewer = world.a.jwt_headers("viewer")
    for spec in world.specs:
        if spec.scopes is None:
            continue
        label = f"{spec.method} {spec.path}"
        kind, scopes = spec.scopes
        r = call(world, spec, world.ids_a, key_without(scopes))
        if r.status_code != 403 or r.json().get("code") != "missing_scope":
            problems.append(f"{label} without {sorted(scopes)}: {r.status_code} {r.text[:200]}")
        if kind == "all" and any(not s.endswith(":read") for s in scopes):
            r = call(world, spec, world.ids_a, viewer)
            if r.status_code != 403:
                problems.append(f"{label} as viewer: {r.status_code} {r.text[:200]}")
        if kind == "all" and "sends:write" in scopes:
            r = call(world, spec, world.ids_a, key_without(set(), allow_sends=False))
            if r.status_code != 403 or r.json().get("code") != "sends_not_allowed":
                problems.append(f"{label} without allow_sends: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)


def test_offset_lists_reject_offsets_beyond_int64(world):
    """Every offset-paginated list: the largest offset answers an empty page, one more is a 400
    naming ``offset`` (it used to reach SQLite and answer 500)."""
    routes = [s for s in world.specs if s.offset_paginated]
    assert routes
    problems = []
    for spec in routes:
        label = f"{spec.method} {spec.path}"
        last = call(world, spec, world.ids_a, world.a.headers, {"offset": MAX_OFFSET})
        if last.status_code != 200 or last.json()["results"] != []:
            problems.append(f"{label}?offset={MAX_OFFSET}: {last.status_code} {last.text[:200]}")
        beyond = call(world, spec, world.ids_a, world.a.headers, {"offset": MAX_OFFSET + 1})
        if beyond.status_code != 400 or "offset" not in beyond.json():
            problems.append(f"{label}?offset={MAX_OFFSET + 1}: {beyond.status_code} {beyond.text[:200]}")
    assert not problems, "\n".join(problems)


def test_ids_beyond_int64_answer_404(world):
    """An integer id SQLite cannot hold names no resource: 404 like any missing id, never a 500
    (binding it raises OverflowError). Query ids may answer 400 instead."""
    problems = []
    huge = 2**63
    for spec in _id_routes(world):
        label = f"{spec.method} {spec.path}"
        for name in spec.int_params:
            r = call(world, spec, {**world.ids_a, name: huge}, world.a.headers)
            if r.status_code != 404:
                problems.append(f"{label} with {name}={huge}: {r.status_code} {r.text[:200]}")
        for name in spec.query_ids:
            r = call(world, spec, {**world.ids_a, name: huge}, world.a.headers)
            if r.status_code not in (400, 404):
                problems.append(f"{label} with ?{name}={huge}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)


def test_membership_lookup_reveals_nothing_of_other_tenants(world):
    """B asking about A's member (single and bulk) learns no segment; A sees its segment."""
    member, segment_id = world.ids_a["user_id"], world.ids_a["segment_id"]
    mine = world.client.get("/api/segments/membership/", params={"user_id": member}, headers=world.a.headers)
    assert mine.status_code == 200 and segment_id in mine.json()["segment_ids"], mine.text
    theirs = world.client.get("/api/segments/membership/", params={"user_id": member}, headers=world.b.headers)
    assert theirs.status_code == 200 and theirs.json()["segment_ids"] == [], theirs.text
    bulk = world.client.post("/api/segments/membership/", json={"user_ids": [member]}, headers=world.b.headers)
    assert bulk.status_code == 200 and bulk.json()["results"][0]["segment_ids"] == [], bulk.text


def test_members_cursor_naming_a_computation_beyond_int64_is_invalid(world):
    cursor = encode_cursor({"c": 2**63, "u": "x"})
    r = world.client.get(f"/api/segments/{world.ids_a['segment_id']}/members/", params={"cursor": cursor},
                         headers=world.a.headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor", r.text


@pytest.mark.parametrize("token", ["0", "x.y", ".\u0080", "\u00e9t\u00e9.\u00e9t\u00e9", "a" * 600])
def test_capability_routes_refuse_forged_tokens_without_a_5xx(world, token):
    """Tokens are the credential there: anything forged (also non-ASCII) is refused, never a 500."""
    problems = []
    for (method, path), _reason in CAPABILITY_ROUTES.items():
        url = path
        for name in PARAM.findall(path):
            url = url.replace("{" + name + "}", quote(token if name != "filename" else "x.png", safe=""))
        r = world.client.request(method, url, content=b"x" if method == "PUT" else None)
        if r.status_code >= 500:
            problems.append(f"{method} {url}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)
