"""The web console in Debian's Chromium (Playwright) against a real ``segops serve`` on demo data: sign in,
build the seed's "High-Value Churners" by clicking and typing, see the API's count, switch the SQL dialect,
save, compute, see members and the size chart, export a Parquet file with the right rows; a viewer sees no
write button; an invalid value shows its error at its field; /docs works with every outside request blocked.

Needs /usr/bin/chromium (``apt-get install -y chromium``; ``.ci/run`` installs it): skipped without it, but on
CI (``CI=true``) a missing browser fails. Each test leaves a screenshot of the page in its tmp dir (the path is in
the failure output). ``SEGOPS_SCREENSHOTS=docs/console`` also writes the screenshots the docs show there.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.test_readme_tour import SEGOPS, env, serving

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SEED = {"logic": "AND", "conditions": [
    {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum", "operator": "gte",
     "value": 500},
    {"type": "recency", "event_type": "page_viewed", "operator": "gt", "window_days": 30}]}
VIEWER = {"email": "viewer@segops.local", "password": "viewer-password-1"}
TIMEOUT_MS = 15_000

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing on CI: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402  (only once the browser is known to exist)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, demo credentials, data dir): demo data in a fresh data dir plus a viewer account, served."""
    root = tmp_path_factory.mktemp("console")
    data = root / "data"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SEGOPS, "--data", str(data), *args], capture_output=True, text=True, timeout=180,
                              cwd=root, env=env())

    demo = run("demo-data", "--users", "300", "--events", "15000", "--seed", "7")
    assert demo.returncode == 0, demo.stderr
    creds = json.loads((data / "demo-credentials.json").read_text())
    viewer = run("admin", "create-user", "--tenant", str(creds["tenant_id"]), "--email", VIEWER["email"],
                 "--password", VIEWER["password"], "--role", "viewer")
    assert viewer.returncode == 0, viewer.stderr
    with serving(root, data) as (base, _):
        add_churners(base, creds["api_key"])
        yield base, creds, data


def add_churners(base: str, key: str, n: int = 12) -> None:
    """Users the seed matches (the small demo data set may have none): $600 of orders, the last page view
    60 days ago; once the flusher has them in the lake."""
    now = datetime.now(timezone.utc)
    at = lambda days: (now - timedelta(days=days)).isoformat().replace("+00:00", "Z")  # noqa: E731
    batch = [event for i in range(n) for event in (
        {"user_id": f"churner-{i:02d}", "event_type": "order_placed", "occurred_at": at(70), "event_id": f"c{i}-1",
         "properties": {"total": 350.0}},
        {"user_id": f"churner-{i:02d}", "event_type": "order_placed", "occurred_at": at(65), "event_id": f"c{i}-2",
         "properties": {"total": 250.0}},
        {"user_id": f"churner-{i:02d}", "event_type": "page_viewed", "occurred_at": at(60), "event_id": f"c{i}-3"})]
    headers = {"Authorization": f"ApiKey {key}"}
    assert httpx.post(f"{base}/api/events/", json={"batch": batch}, headers=headers, timeout=30).status_code == 202
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/api/profiles/churner-{n - 1:02d}/", headers=headers, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the flusher did not write the churners' events"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")  # Chromium's caches and profile stay out of the real home
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
            yield chromium
            chromium.close()
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old


@pytest.fixture
def page(browser, served, tmp_path, request):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(served[0] + "/")
    yield page
    # The page as the test left it, in the test's tmp dir (kept for failed tests; pytest prints this line then).
    shot = tmp_path / "last-state.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    context.close()
    assert not errors, f"errors in the page: {errors}"


def docs_screenshot(page, name: str) -> None:
    target = os.environ.get("SEGOPS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def sign_in(page, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def api(served, method: str, path: str, **kwargs) -> httpx.Response:
    base, creds, _ = served
    response = httpx.request(method, base + path, headers={"Authorization": f"ApiKey {creds['api_key']}"},
                             timeout=60, **kwargs)
    assert response.status_code < 300, response.text
    return response


def add_condition(page, group: str, kind: str) -> None:
    page.get_by_label(f"{group}: new condition type").select_option(kind)
    page.get_by_role("button", name=f"{group}: add condition").click()


def preview_count(page) -> int:
    count = page.locator("#preview-count")
    expect(count).to_be_visible()
    return int(count.get_attribute("data-count"))


def build_the_seed(page) -> None:
    """The seed's definition, field by field, as a user would."""
    add_condition(page, "Definition", "monetary")
    page.get_by_label("Condition 1 event type").fill("order_placed")
    page.get_by_label("Condition 1 metric").select_option("sum")
    page.get_by_label("Condition 1 property").fill("total")
    page.get_by_label("Condition 1 operator").select_option("gte")
    page.get_by_label("Condition 1 value").fill("500")
    add_condition(page, "Definition", "recency")
    page.get_by_label("Condition 2 event type").fill("page_viewed")
    page.get_by_label("Condition 2 operator").select_option("gt")
    page.get_by_label("Condition 2 days ago").fill("30")


def test_build_the_seed_save_compute_and_export(page, served, tmp_path):
    base, creds, _ = served
    sign_in(page, creds["email"], creds["password"])
    page.get_by_role("link", name="New segment").click()
    page.get_by_label("Name", exact=True).fill("High-Value Churners")
    page.get_by_label("Description").fill("spent >= $500, gone 30 days")
    build_the_seed(page)

    expected = api(served, "POST", "/api/segments/preview/", json={"definition": SEED, "limit": 10}).json()
    assert expected["matched_users"] >= 12, "the churners are in"
    expect(page.locator("#preview-count")).to_have_attribute("data-count", str(expected["matched_users"]))
    expect(page.locator(".sample li").first).to_have_text(expected["sample_user_ids"][0])

    # the JSON tab shows exactly the definition that was clicked together
    page.get_by_role("tab", name="JSON").click()
    assert json.loads(page.get_by_label("Definition JSON").input_value()) == SEED
    page.get_by_role("tab", name="Visual").click()
    expect(page.get_by_label("Condition 1 value")).to_have_value("500")

    expect(page.get_by_label("SQL (duckdb)")).to_contain_text("FROM lake.events")
    # the past, in every dialect: the same SQL as the API's for that as_of
    page.get_by_label("as of (UTC)").fill("2026-11-01T00:00")
    for dialect in ("postgres", "bigquery", "snowflake"):
        page.get_by_label("dialect").select_option(dialect)
        answer = api(served, "POST", "/api/segments/preview/", json={
            "definition": SEED, "as_of": "2026-11-01T00:00:00Z", "dialect": dialect}).json()
        expect(page.get_by_label(f"SQL ({dialect})")).to_have_text(answer["sql"])
        expect(page.locator("#preview-count")).to_have_attribute("data-count", str(answer["matched_users"]))
    page.get_by_role("button", name="now").click()
    page.get_by_label("dialect").select_option("duckdb")
    expect(page.locator("#preview-count")).to_have_attribute("data-count", str(expected["matched_users"]))
    docs_screenshot(page, "builder")

    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("heading", name="High-Value Churners")).to_be_visible()
    segment_id = int(page.url.rsplit("/", 1)[1])
    stored = api(served, "GET", f"/api/segments/{segment_id}/").json()
    assert stored["definition"] == SEED and stored["version"] == 1

    page.get_by_role("button", name="Compute now").click()
    expect(page.locator(".job-status")).to_contain_text("done", timeout=60_000)
    job = api(served, "GET", f"/api/segments/{segment_id}/jobs/").json()["results"][0]
    assert job["status"] == "done" and job["member_count"] == expected["matched_users"]
    expect(page.locator("#segment-members")).to_have_text(f"{job['member_count']:,}")
    expect(page.locator(".size-chart")).to_have_attribute("data-points", "1")
    members = api(served, "GET", f"/api/segments/{segment_id}/members/?limit=1000").json()
    expect(page.get_by_role("list", name="Members").get_by_role("listitem")).to_have_count(
        min(50, members["count"]))
    expect(page.get_by_role("list", name="Members").get_by_role("listitem").first).to_have_text(
        members["results"][0]["user_id"])

    page.get_by_label("Format").select_option("parquet")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export and download").click()
    path = tmp_path / "members.parquet"
    download.value.save_as(path)
    exported = pq.read_table(path).column("user_id").to_pylist()
    assert sorted(exported) == sorted(m["user_id"] for m in members["results"])
    assert len(exported) == job["member_count"]

    # a second version: the history diff names the change; its computation is the chart's second point
    page.get_by_label("Condition 2 days ago").fill("45")
    page.get_by_role("button", name="Save definition").click()
    expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    diff = page.get_by_label("Changes from version 1 to version 2")
    expect(diff).to_contain_text(re.compile(r'-\s+"window_days": 30'))
    expect(diff).to_contain_text(re.compile(r'\+\s+"window_days": 45'))
    page.get_by_role("button", name="Compute now").click()
    expect(page.locator(".size-chart")).to_have_attribute("data-points", "2", timeout=60_000)
    second = api(served, "GET", f"/api/segments/{segment_id}/jobs/").json()["results"][0]
    assert second["version"] == 2 and second["status"] == "done"
    expect(page.locator("#segment-members")).to_have_text(f"{second['member_count']:,}")
    expect(page.locator(".preview-pane .count")).not_to_contain_text("updating")
    docs_screenshot(page, "segment")


def test_an_invalid_value_shows_its_error_at_the_field(page, served):
    _, creds, _ = served
    sign_in(page, creds["email"], creds["password"])
    page.get_by_role("link", name="New segment").click()
    add_condition(page, "Definition", "monetary")
    page.get_by_label("Condition 1 event type").fill("order_placed")
    page.get_by_label("Condition 1 property").fill("total")
    value = page.get_by_label("Condition 1 value")
    value.fill("lots")
    expect(value).to_have_attribute("aria-invalid", "true")
    error = page.locator(f"#{value.get_attribute('aria-describedby')}")
    expect(error).to_have_text("expected a number")
    value.fill("12")
    expect(value).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#preview-count")).to_be_visible()


def test_a_viewer_sees_no_write_buttons(page, served):
    base, creds, _ = served
    segment = api(served, "POST", "/api/segments/", json={"name": "Viewer sees this", "definition": SEED}).json()
    sign_in(page, VIEWER["email"], VIEWER["password"])
    expect(page.get_by_role("link", name="Viewer sees this")).to_be_visible()
    expect(page.get_by_role("link", name="New segment")).to_have_count(0)
    page.get_by_role("link", name="Viewer sees this").click()
    expect(page.locator("#preview-count")).to_be_visible()  # previews are reads
    for name in ("Save definition", "Compute now", "Definition: add condition", "Remove condition 1"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_label("Condition 1 value")).not_to_be_editable()
    assert page.url.endswith(f"/{segment['id']}")
    page.get_by_role("link", name="Broadcasts").click()
    expect(page.get_by_text("may not send broadcasts")).to_be_visible()
    expect(page.get_by_role("button", name="Prepare")).to_have_count(0)


def test_an_api_key_signs_in_and_signing_out_forgets_it(page, served):
    _, creds, _ = served
    page.get_by_role("tab", name="API key").click()
    page.get_by_label("API key").fill(creds["api_key"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("service (key")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_every_control_has_a_label_and_the_builder_works_by_keyboard(page, served):
    _, creds, _ = served
    sign_in(page, creds["email"], creds["password"])
    page.get_by_role("link", name="New segment").focus()
    page.keyboard.press("Enter")
    type_select = page.get_by_label("Definition: new condition type")
    type_select.focus()
    type_select.select_option("sequence")  # a select changes by keyboard too; the button is reached by Tab
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Definition: add condition")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Condition 1 step 2 event type")).to_be_visible()
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !(el.getAttribute('aria-label') || (el.labels && el.labels.length) || el.textContent.trim()))
        .map((el) => el.outerHTML)""")
    assert unlabelled == []


def test_docs_work_offline_and_authorize_takes_either_credential(page, served):
    base, creds, _ = served
    outside: list[str] = []

    def only_the_server(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(base + "/docs")
    whoami = page.locator(".opblock", has=page.locator('[data-path="/api/auth/me/"]'))
    whoami.locator(".opblock-summary").click()
    whoami.get_by_role("button", name="Try it out").click()

    def authorize(scheme: int, value: str, role: str) -> None:
        """Authorize with the scheme (0: ApiKey, 1: Bearer) alone; GET /api/auth/me/ then names its role."""
        page.get_by_role("button", name="Authorize").first.click()
        schemes = page.locator(".modal-ux .auth-container")
        expect(schemes).to_have_count(2)
        for other in range(2):
            logout = schemes.nth(other).locator("button", has_text="Logout")
            if logout.count():
                logout.click()
        schemes.nth(scheme).locator("input").fill(value)
        schemes.nth(scheme).locator("button", has_text="Authorize").click()
        page.locator(".modal-ux button", has_text="Close").first.click()
        whoami.get_by_role("button", name="Execute").click()
        body = whoami.locator(".live-responses-table .response-col_description pre").first
        expect(body).to_contain_text(f'"role": "{role}"')
        assert json.loads(body.inner_text())["tenant_id"] == creds["tenant_id"]

    authorize(0, creds["api_key"], "service")
    token = httpx.post(f"{base}/api/auth/token/", json={"email": creds["email"], "password": creds["password"]},
                       timeout=30).json()["access"]
    authorize(1, token, "admin")
    assert outside == []


def sign_in_with_key(page, key: str) -> None:
    page.get_by_role("tab", name="API key").click()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_journeys_their_steps_and_a_runs_history(page, served):
    _, creds, _ = served
    template = api(served, "POST", "/api/templates/", json={
        "name": "Welcome mail", "subject": "Hi", "purpose": "transactional", "text": "Hi",
        "html": "<html><body><p>Hi</p></body></html>"}).json()
    journey = api(served, "POST", "/api/journeys/", json={
        "name": "Welcome", "status": "active", "trigger": {"type": "api"}, "steps": [
            {"id": "hello", "type": "send_email", "templateId": template["id"], "next": "pause"},
            {"id": "pause", "type": "wait", "duration": {"hours": 1}}]}).json()
    run = api(served, "POST", f"/api/journeys/{journey['id']}/trigger/",
              json={"userId": "churner-00", "email": "churner@example.com"}).json()
    sign_in(page, creds["email"], creds["password"])
    page.get_by_role("link", name="Journeys").click()
    row = page.get_by_role("row", name=re.compile("Welcome"))
    expect(row).to_contain_text("active")
    expect(row.get_by_role("cell").nth(2)).to_have_text("1")  # runs
    row.get_by_role("link", name="Welcome").click()
    expect(page.locator(".steps-list li")).to_have_count(2)
    page.get_by_role("link", name=str(run["id"]), exact=True).click()
    expect(page.get_by_role("heading", name=f"Run {run['id']}")).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("hello", timeout=30_000)


def test_a_broadcast_is_prepared_and_only_a_credential_that_may_send_redeems_it(page, served):
    _, creds, _ = served
    segment = api(served, "POST", "/api/segments/", json={"name": "Broadcast audience", "definition": SEED}).json()
    api(served, "POST", f"/api/segments/{segment['id']}/compute/?wait=60")
    template = api(served, "POST", "/api/templates/", json={
        "name": "Win-back", "subject": "We miss you", "purpose": "marketing", "text": "Hi",
        "html": "<html><body><p>Hi</p></body></html>"}).json()
    agent = api(served, "POST", "/api/keys/", json={"name": "agent", "allow_sends": False, "scopes": [
        "broadcasts:read", "broadcasts:write", "sends:write", "segments:read", "templates:read"]}).json()["key"]
    sign_in_with_key(page, agent)
    page.get_by_role("link", name="Broadcasts").click()
    page.get_by_label("Template").select_option(label="Win-back")
    page.get_by_label("Audience").select_option(label="Broadcast audience")
    page.get_by_role("button", name="Prepare").click()
    prepared = page.get_by_role("region", name="Prepared broadcast")
    expect(prepared).to_contain_text("recipients (frozen)")
    expect(prepared).to_contain_text(re.compile(r"expires in 1[45]:\d\d"))
    send = prepared.get_by_role("button", name="Send now")
    expect(send).to_be_disabled()
    expect(prepared).to_contain_text("allow_sends is off")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, creds["email"], creds["password"])  # the demo admin may send; back on the same page
    row = page.get_by_role("row", name=re.compile("Win-back")).first
    expect(row).to_contain_text("prepared")
    row.get_by_role("button", name=re.compile("^Send Win-back")).click()
    expect(row).to_contain_text(re.compile("sending|sent"))
