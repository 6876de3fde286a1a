"""Each kind of domain error answers one status, with the seed's envelope (``detail``, ``code``, one key
per field) and its headers, through the real app (a test-only route raises it) and through
``api.errors.to_api_error``, the one mapping. The statuses and texts expected here are the API's
answers before the mapping existed (routers and SendsRoute built them one by one)."""
from __future__ import annotations

import pytest
from fastapi import Depends

import engine.errors as kinds
from api.deps import Principal, require
from api.errors import STATUS_OF_KIND, ApiError, to_api_error
from compiler import DefinitionError
from engine.accounts import AccountConflict, AccountError, AuthError, TenantNotFound
from engine.ingest.bulk import BulkIngestError
from engine.membership.compute import SegmentHasNoDefinition
from engine.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)
from engine.exports import ExportError
from engine.ingest.service import IngestUnavailable
from engine.ingest.parse import IngestError, IngestTooLarge
from engine.membership.computations import ForeignCursor, SnapshotExpired
from engine.segments.store import SegmentInUse, SegmentNotComputed, SegmentNotFound
from engagement.common import SendsError

pytest_plugins = ["tests.api_fixtures"]

BEARER = {"www-authenticate": 'Bearer realm="segops"'}

# name -> (the exception, status, body, headers the answer must carry)
CASES = {
    "invalid_input": (InvalidInput("must be one of a, b", code="invalid_choice", field="kind"), 400,
                      {"detail": "kind: must be one of a, b", "code": "invalid_choice",
                       "kind": ["must be one of a, b"]}, {}),
    "too_large": (TooLarge("larger than 10 bytes", code="payload_too_large", field="body"), 413,
                  {"detail": "body: larger than 10 bytes", "code": "payload_too_large",
                   "body": ["larger than 10 bytes"]}, {}),
    "unsupported_media": (UnsupportedMedia("must be image/png as declared", code="content_type_mismatch",
                                           field="Content-Type"), 415,
                          {"detail": "Content-Type: must be image/png as declared", "code": "content_type_mismatch",
                           "Content-Type": ["must be image/png as declared"]}, {}),
    "unprocessable": (Unprocessable("no profile 'u1'", code="profile_not_found", field="userId"), 422,
                      {"detail": "userId: no profile 'u1'", "code": "profile_not_found", "userId": ["no profile 'u1'"]},
                      {}),
    "not_authenticated": (NotAuthenticated("Token has expired.", code="token_expired"), 401,
                          {"detail": "Token has expired.", "code": "token_expired"}, BEARER),
    "forbidden": (Forbidden("may not send", code="sends_not_allowed", field="allow_sends"), 403,
                  {"detail": "allow_sends: may not send", "code": "sends_not_allowed", "allow_sends": ["may not send"]},
                  {}),
    "not_found": (NotFound("journey", 7), 404, {"detail": "No journey 7.", "code": "not_found"}, {}),
    "not_found_no_id": (NotFound("asset"), 404, {"detail": "No asset.", "code": "not_found"}, {}),
    "conflict": (Conflict("still being processed; retry shortly", code="idempotency_in_progress",
                          field="Idempotency-Key", retry_after=1), 409,
                 {"detail": "Idempotency-Key: still being processed; retry shortly", "code": "idempotency_in_progress",
                  "Idempotency-Key": ["still being processed; retry shortly"]}, {"retry-after": "1"}),
    "gone": (Gone("the prepared send expired; prepare it again", code="prepared_send_expired",
                  field="preparedSendId"), 410,
             {"detail": "preparedSendId: the prepared send expired; prepare it again", "code": "prepared_send_expired",
              "preparedSendId": ["the prepared send expired; prepare it again"]}, {}),
    "rate_limited": (RateLimited("Too many login attempts; retry in 12 s.", limit=10, remaining=0, reset=30,
                                 retry_after=12), 429,
                     {"detail": "Too many login attempts; retry in 12 s.", "code": "rate_limited"},
                     {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "30",
                      "retry-after": "12"}),
    "unavailable": (Unavailable("ingest is shutting down", code="ingest_unavailable", retry_after=1), 503,
                    {"detail": "ingest is shutting down", "code": "ingest_unavailable"}, {"retry-after": "1"}),
    # the engine's own classes, re-based on the kinds: the answers their routes gave before
    "segment_not_found": (SegmentNotFound(5), 404, {"detail": "No segment 5.", "code": "not_found"}, {}),
    "segment_in_use": (SegmentInUse(5, [7, 9]), 409,
                       {"detail": "Segment 5 is referenced by segment(s) 7, 9; remove those references first.",
                        "code": "segment_in_use"}, {}),
    "segment_not_computed": (SegmentNotComputed(5), 409,
                             {"detail": "Segment 5 has not been computed yet; POST /api/segments/5/compute/ and retry "
                                        "when it is done.", "code": "segment_not_computed"}, {}),
    "segment_not_computed_export": (SegmentNotComputed(5, then="first"), 409,
                                    {"detail": "Segment 5 has not been computed yet; POST /api/segments/5/compute/ "
                                               "first.", "code": "segment_not_computed"}, {}),
    "segment_has_no_definition": (SegmentHasNoDefinition(), 400,
                                  {"detail": "definition: set a definition (PATCH) before computing",
                                   "code": "segment_has_no_definition",
                                   "definition": ["set a definition (PATCH) before computing"]}, {}),
    "snapshot_expired": (SnapshotExpired(3), 410,
                         {"detail": "The membership snapshot this cursor belongs to is no longer kept; start again "
                                    "without a cursor.", "code": "cursor_expired", "cursor": ["expired"]}, {}),
    "foreign_cursor": (ForeignCursor(3), 400,
                       {"detail": "cursor: not a cursor of this segment", "code": "invalid_cursor",
                        "cursor": ["not a cursor of this segment"]}, {}),
    "export_error": (ExportError("traits[0]", "unknown trait 'x'", "unknown_trait"), 400,
                     {"detail": "traits[0]: unknown trait 'x'", "code": "unknown_trait",
                      "traits[0]": ["unknown trait 'x'"]}, {}),
    "ingest_error": (IngestError("empty_batch", "batch: must hold at least one item",
                                 {"batch": ["must hold at least one item"]}), 400,
                     {"detail": "batch: must hold at least one item", "code": "empty_batch",
                      "batch": ["must hold at least one item"]}, {}),
    "ingest_too_large": (IngestTooLarge("batch_too_large", "body: request body exceeds 4 bytes",
                                        {"body": ["at most 4 bytes"]}), 413,
                         {"detail": "body: request body exceeds 4 bytes", "code": "batch_too_large",
                          "body": ["at most 4 bytes"]}, {}),
    "ingest_unavailable": (IngestUnavailable("replaying the write-ahead log of an earlier run; retry shortly",
                                             retry_after=5), 503,
                           {"detail": "replaying the write-ahead log of an earlier run; retry shortly",
                            "code": "ingest_unavailable"}, {"retry-after": "5"}),
    "ingest_unavailable_no_retry": (IngestUnavailable("this segops process is read-only"), 503,
                                    {"detail": "this segops process is read-only", "code": "ingest_unavailable"}, {}),
    "auth_error": (AuthError("No active account found with the given credentials.", "invalid_credentials"), 401,
                   {"detail": "No active account found with the given credentials.", "code": "invalid_credentials"},
                   BEARER),
    "account_error": (AccountError("scopes", "give at least one scope", "invalid_scopes"), 400,
                      {"detail": "scopes: give at least one scope", "code": "invalid_scopes",
                       "scopes": ["give at least one scope"]}, {}),
    "account_conflict": (AccountConflict("email", "a user with this email exists", "email_taken"), 409,
                         {"detail": "email: a user with this email exists", "code": "email_taken",
                          "email": ["a user with this email exists"]}, {}),
    "tenant_not_found": (TenantNotFound(9), 404,
                         {"detail": "tenant: no tenant 9", "code": "not_found", "tenant": ["no tenant 9"]}, {}),
    "sends_error": (SendsError("steps[1].next", "no step 'x'", "unknown_step"), 400,
                    {"detail": "steps[1].next: no step 'x'", "code": "unknown_step", "steps[1].next": ["no step 'x'"]},
                    {}),
    "bulk_ingest_error": (BulkIngestError("events.csv: 2 invalid row(s); nothing was written", ["row 3: x"]), 400,
                          {"detail": "events.csv: 2 invalid row(s); nothing was written", "code": "invalid_file"},
                          {}),
    "definition_error": (DefinitionError.single("definition.conditions[0].type", "unknown condition type",
                                                "unknown_condition"), 400,
                         {"detail": "definition.conditions[0].type: unknown condition type",
                          "code": "unknown_condition",
                          "definition.conditions[0].type": ["unknown condition type"]}, {}),
}


@pytest.fixture
def raising(app):
    """``GET /test-only/raise/<name>`` (a threadpool route) and ``/test-only/araise/<name>`` (async)
    raise ``CASES[name]``, after authentication like every route."""
    @app.get("/test-only/raise/{name}")
    def raise_sync(name: str, principal: Principal = Depends(require("segments:read"))):
        raise CASES[name][0]

    @app.get("/test-only/araise/{name}")
    async def raise_async(name: str, principal: Principal = Depends(require("segments:read"))):
        raise CASES[name][0]

    return app


@pytest.mark.parametrize("route", ["raise", "araise"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_kind_answers_its_status_envelope_and_headers(raising, client, tenant_a, name, route):
    _, status, body, headers = CASES[name]
    r = client.get(f"/test-only/{route}/{name}", headers=tenant_a.headers)
    assert r.status_code == status, r.text
    assert r.json() == body
    assert r.headers["content-type"] == "application/json"
    for header, value in headers.items():
        assert r.headers.get(header) == value, header
    if "retry-after" not in headers:
        assert "retry-after" not in r.headers


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_api_error_builds_the_same_answer(name):
    exc, status, body, headers = CASES[name]
    err = to_api_error(exc)
    assert (err.status, err.body()) == (status, body)
    assert {k.lower(): v for k, v in err.headers.items()} == headers


def test_api_errors_pass_through_unchanged():
    err = ApiError(403, "This credential lacks the 'x' scope.", "missing_scope", {"scope": ["x"]})
    assert to_api_error(err) is err


def test_every_kind_has_a_status_and_only_the_mapping_has_it():
    """A new kind without a status would answer its base's: every kind of engine.errors is listed,
    and no kind carries a status of its own (HTTP stays in api/)."""
    declared = {getattr(kinds, name) for name in kinds.__all__} - {DomainError}
    assert declared == set(STATUS_OF_KIND)
    assert not any("status" in vars(kind) for kind in (DomainError, *declared))
    assert not hasattr(InvalidInput("x", code="c"), "status")


def test_an_idempotent_post_stores_and_replays_a_domain_errors_answer(client, tenant_a):
    """``idempotent()`` maps through ``to_api_error`` too: the 4xx answer is stored and replayed."""
    headers = {**tenant_a.headers, "Idempotency-Key": "mapping-1"}
    body = {"templateId": 999_999, "userId": "nobody"}
    first = client.post("/api/emails/", json=body, headers=headers)
    again = client.post("/api/emails/", json=body, headers=headers)
    expected = {"detail": "templateId: no template 999999", "code": "template_not_found",
                "templateId": ["no template 999999"]}
    assert (first.status_code, first.json()) == (400, expected)
    assert (again.status_code, again.json()) == (400, expected)
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
