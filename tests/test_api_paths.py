"""The public surface: every (method, path) of the OpenAPI document, and the statuses each operation
documents, equal the list captured once from the base commit of issue 13 (ee69ba9) before routers
got ``prefix=`` and errors one mapping. A route added or moved on purpose updates this list."""
from __future__ import annotations

pytest_plugins = ["tests.api_fixtures"]

# (method, path, documented statuses), captured from `create_app(...).openapi()` at ee69ba9.
BASE_OPERATIONS = [
    ("DELETE", "/api/assets/{asset_id}/", "204 400 401 403 404 422 429"),
    ("DELETE", "/api/brand-kits/{kit_id}/", "204 400 401 403 404 422 429"),
    ("DELETE", "/api/journeys/{journey_id}/", "200 400 401 403 404 409 422 429"),
    ("DELETE", "/api/keys/{key_id}/", "204 400 401 403 404 422 429"),
    ("DELETE", "/api/recipients/suppressions/", "200 400 401 403 404 422 429"),
    ("DELETE", "/api/segments/{segment_id}/", "204 400 401 403 404 409 422 429"),
    ("GET", "/api/assets/", "200 400 401 403 404 422 429"),
    ("GET", "/api/assets/files/{public_token}/{filename}", "200 400 401 403 404 422 429"),
    ("GET", "/api/assets/{asset_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/auth/me/", "200 400 401 403 404 422 429"),
    ("GET", "/api/brand-kits/", "200 400 401 403 404 422 429"),
    ("GET", "/api/brand-kits/{kit_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/broadcasts/", "200 400 401 403 404 422 429"),
    ("GET", "/api/broadcasts/{broadcast_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/catalog/", "200 400 401 403 404 422 429"),  # issue 15 (the web console's autocomplete)
    ("GET", "/api/emails/", "200 400 401 403 404 422 429"),
    ("GET", "/api/emails/{send_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/events/dead-letters/", "200 400 401 403 404 422 429"),
    ("GET", "/api/journeys/", "200 400 401 403 404 422 429"),
    ("GET", "/api/journeys/{journey_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/journeys/{journey_id}/runs/", "200 400 401 403 404 422 429"),
    ("GET", "/api/journeys/{journey_id}/runs/{run_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/keys/", "200 400 401 403 404 422 429"),
    ("GET", "/api/keys/{key_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/profiles/", "200 400 401 403 404 422 429"),
    ("GET", "/api/profiles/{user_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/recipients/click/{token}/", "302 400 401 403 404 422 429"),
    ("GET", "/api/recipients/open/{token}.gif", "200 400 401 403 404 422 429"),
    ("GET", "/api/recipients/subscription/", "200 400 401 403 404 422 429"),
    ("GET", "/api/recipients/unsubscribe/{token}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/exports/{export_id}/download/", "200 302 400 401 403 404 409 422 429"),
    ("GET", "/api/segments/jobs/{job_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/membership/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/schema/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/export/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/explain/", "200 400 401 403 404 422 429"),  # issue 19
    ("GET", "/api/segments/{segment_id}/jobs/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/jobs/{job_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/members/", "200 400 401 403 404 409 410 422 429"),
    ("GET", "/api/segments/{segment_id}/versions/", "200 400 401 403 404 422 429"),
    ("GET", "/api/segments/{segment_id}/versions/{version}/", "200 400 401 403 404 422 429"),
    ("GET", "/api/templates/", "200 400 401 403 404 422 429"),
    ("GET", "/api/templates/{template_id}/", "200 400 401 403 404 422 429"),
    ("GET", "/healthz", "200 400 401 403 404 422 429"),
    ("GET", "/metrics", "200 400 401 403 404 422 429"),
    ("GET", "/readyz", "200 400 401 403 404 422 429 503"),
    ("PATCH", "/api/assets/{asset_id}/", "200 400 401 403 404 422 429"),
    ("PATCH", "/api/brand-kits/{kit_id}/", "200 400 401 403 404 422 429"),
    ("PATCH", "/api/journeys/{journey_id}/", "200 400 401 403 404 409 422 429"),
    ("PATCH", "/api/segments/{segment_id}/", "200 400 401 403 404 409 422 429"),  # 409: issue 19
    ("PATCH", "/api/templates/{template_id}/", "200 400 401 403 404 409 422 429"),
    ("POST", "/api/assets/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/assets/uploads/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/assets/{asset_id}/finalize/", "200 400 401 403 404 409 422 429"),
    ("POST", "/api/auth/token/", "200 400 401 403 404 422 429"),
    ("POST", "/api/auth/token/refresh/", "200 400 401 403 404 422 429"),
    ("POST", "/api/brand-kits/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/broadcasts/", "202 400 401 403 404 409 422 429"),
    ("POST", "/api/broadcasts/prepare/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/broadcasts/send-prepared/", "202 400 401 403 404 409 410 422 429"),
    ("POST", "/api/broadcasts/{broadcast_id}/cancel/", "200 400 401 403 404 409 422 429"),
    ("POST", "/api/emails/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/emails/batch/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/events/", "202 400 401 403 404 413 422 429 503"),
    ("POST", "/api/events/identify/", "202 400 401 403 404 413 422 429 503"),
    ("POST", "/api/journeys/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/journeys/{journey_id}/trigger/", "202 400 401 403 404 409 422 429"),
    ("POST", "/api/keys/", "201 400 401 403 404 422 429"),
    ("POST", "/api/recipients/feedback/", "202 400 401 403 404 409 422 429"),
    ("POST", "/api/recipients/unsubscribe/{token}/", "200 400 401 403 404 422 429"),
    ("POST", "/api/segments/", "201 400 401 403 404 422 429"),
    ("POST", "/api/segments/explain/", "200 400 401 403 404 422 429"),  # issue 19
    ("POST", "/api/segments/membership/", "200 400 401 403 404 422 429"),
    ("POST", "/api/segments/preview/", "200 400 401 403 404 422 429"),
    ("POST", "/api/segments/{segment_id}/compute/", "200 202 400 401 403 404 422 429"),
    ("POST", "/api/segments/{segment_id}/export/", "200 202 400 401 403 404 409 422 429"),
    ("POST", "/api/segments/{segment_id}/impact/", "200 400 401 403 404 422 429"),  # issue 19
    ("POST", "/api/segments/{segment_id}/preview/", "200 400 401 403 404 422 429"),
    ("POST", "/api/segments/{segment_id}/versions/{version}/preview/", "200 400 401 403 404 422 429"),
    ("POST", "/api/templates/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/templates/{template_id}/archive/", "200 400 401 403 404 422 429"),
    ("POST", "/api/templates/{template_id}/duplicate/", "201 400 401 403 404 409 422 429"),
    ("POST", "/api/templates/{template_id}/preview/", "200 400 401 403 404 422 429"),
    ("POST", "/api/templates/{template_id}/unarchive/", "200 400 401 403 404 422 429"),
    ("PUT", "/api/assets/uploads/{token}/", "204 400 401 403 404 413 415 422 429"),
    ("PUT", "/api/recipients/subscription/", "200 400 401 403 404 422 429"),
]


def _operations(app) -> list[tuple[str, str, str]]:
    return sorted((method.upper(), path, " ".join(sorted(op["responses"])))
                  for path, item in app.openapi()["paths"].items() for method, op in item.items())


def test_openapi_paths_are_the_base_commits(app):
    assert {(m, p) for m, p, _ in _operations(app)} == {(m, p) for m, p, _ in BASE_OPERATIONS}


def test_documented_statuses_are_the_base_commits(app):
    assert _operations(app) == sorted(BASE_OPERATIONS)


def test_an_id_too_long_for_int_is_no_route_match(app, client, tenant_a):
    """``{id:int}`` matches at most 19 digits (the convertor create_app registers, once per process
    and again for every app): 5,000 digits is a 404, not int()'s ValueError as a 500."""
    from api.app import create_app

    create_app(app.state.runtime.settings, runtime=app.state.runtime)  # registering again changes nothing
    for path in ("/api/segments/{}/", "/api/templates/{}/", "/api/segments/{}/members/",
                 "/api/journeys/1/runs/{}/"):
        r = client.get(path.format("9" * 5000), headers=tenant_a.headers)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == "not_found"
