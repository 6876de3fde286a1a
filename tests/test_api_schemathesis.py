"""Schemathesis over the app's own OpenAPI schema, in process (ASGI), as tenant A.

Every operation gets generated requests, valid ones and (negative mode) invalid ones, as tenant
A's admin user (JWT); the world (tests/api_world_fixtures.py) gives tenant A one resource
of each kind, so small generated ids also hit real rows. Checks: no 5xx, the response body
conforms to the schema, the status code and content type are documented.

A third mode, ``hostile``, takes a valid request and plants one value of a shape that generators
rarely produce where it is legal JSON or a legal URL: unpaired UTF-16 surrogates (in strings and
keys), integers beyond 64 bits, NaN and Infinity (Python's json writes them; json.loads accepts
them), float extremes, nesting 10,000 deep, and for path and query parameters their URL spellings
(2**70, a 5,000-digit number, "NaN", "1e999"). Each must answer a documented 4xx, never a 5xx.

Driven through ``APIOperation.as_strategy`` with Hypothesis rather than ``@schema.parametrize``:
the lazy loader that would take the app from a fixture (``schemathesis.pytest.from_fixture``,
schemathesis 4.32.5) sets ``Node._nodeid``, which pytest 9.2 no longer has. Each operation
runs in turn; failures are collected and reported together.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_world_fixtures import build_resources

pytest_plugins = ["tests.api_fixtures"]

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
EXAMPLES_PER_MODE = 8
HOSTILE = "hostile"  # the third mode (module docstring)
# No operation is excluded: add (method, path) -> reason here only with a written reason.
EXCLUDED: dict[tuple[str, str], str] = {}


def _describe(err: BaseException) -> str:
    """The failure with its reproduction: schemathesis' own report (it ends with a curl command),
    or the exception plus Hypothesis' notes (the falsifying case) for an error raised by the app."""
    if isinstance(err, FailureGroup):
        return str(err)
    if isinstance(err, BaseExceptionGroup):  # Hypothesis: several distinct failures
        return "\n".join(_describe(sub) for sub in err.exceptions)
    return "\n".join([f"{type(err).__name__}: {err}", *getattr(err, "__notes__", ())])


def _negatable(operation) -> bool:
    """Whether negative mode can make an invalid request: a body, a query or header parameter, or
    a constrained path parameter. (An unconstrained string path parameter accepts anything.)"""
    if list(operation.body) or list(operation.query) or list(operation.headers):
        return True
    return any(set(p.definition["schema"]) - {"type", "title"} or p.definition["schema"].get("type") != "string"
               for p in operation.path_parameters)


DEEP = "segops-schemathesis-deep-nesting"  # replaced by 10,000 nested arrays once serialized
BODY_SHAPES = st.sampled_from([
    "\ud800", "a\udfffb", "\udc00\ud800", {"\ud800": 1}, [["\udbff"]],
    2**70, -(2**70), 2**63, -(2**63) - 1, 2**64, 10**400,
    float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0,
    DEEP,
])
URL_SHAPES = st.sampled_from([str(2**70), str(-(2**70)), str(2**63), "9" * 5000, "NaN", "Infinity", "-0", "1e999"])


def _paths(value, path=()):
    """Every place in decoded JSON a value can be planted: the value itself and everything inside it."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*path, key))


def _planted(value, path, shape):
    if not path:
        return shape
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _planted(value[path[0]], path[1:], shape)
    return copy


def _plant_hostile(case, data) -> None:
    """Replace one body value, query or path parameter of a valid case with a hostile shape."""
    targets = [("path_parameters", name) for name in case.path_parameters or {}]
    targets += [("query", name) for name in case.query or {}]
    json_body = (case.media_type or "").endswith("json") and not isinstance(case.body, (bytes, type(NOT_SET)))
    if json_body:
        targets += [("body", path) for path in _paths(case.body)]
    if not targets:
        return
    where, at = data.draw(st.sampled_from(targets))
    if where != "body":
        setattr(case, where, {**getattr(case, where), at: data.draw(URL_SHAPES)})
        return
    text = json.dumps(_planted(case.body, at, data.draw(BODY_SHAPES)))  # NaN as NaN, surrogates as \\ud800
    case.body = text.replace(json.dumps(DEEP), "[" * 10_000 + "]" * 10_000).encode()


def _run_operation(operation, mode: GenerationMode | str, headers: dict, statuses: Counter) -> None:
    def record_status(ctx, response, case) -> None:
        statuses[response.status_code] += 1

    hostile = mode == HOSTILE

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE if hostile else mode), data=st.data())
    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case, data):
        if hostile:
            _plant_hostile(case, data)
        case.call_and_validate(headers=headers, checks=[*CHECKS, record_status])

    run()


@pytest.mark.slow
def test_api_conforms_to_its_schema(client, runtime, tenants, app):
    build_resources(client, runtime, tenants.a)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # An admin JWT, not tenant A's API key: fuzzing DELETE /api/keys/{key_id}/ may revoke that key.
    headers = tenants.a.jwt_headers("admin")
    failures, ran = [], 0
    unauthenticated = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"schema error: {result.err()}"
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE, HOSTILE] if _negatable(operation) else [])
        for mode in modes:
            ran += 1
            statuses = Counter()
            try:
                _run_operation(operation, mode, headers, statuses)
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"== {operation.method.upper()} {operation.path} ({getattr(mode, 'value', mode)})\n"
                                f"{_describe(err)}")
            if not operation.path.startswith("/api/auth/token/"):  # there the body is the credential
                unauthenticated[f"{operation.method.upper()} {operation.path}"] += statuses[401]
    assert ran > 0
    # The credential stayed valid throughout, so every other answer came from the route itself.
    assert not +unauthenticated, f"401s with a valid credential: {dict(+unauthenticated)}"
    assert not failures, f"{len(failures)} of {ran} runs failed:\n\n" + "\n\n".join(failures)
