"""What a first run meets on the command line: a mistyped --data, settings (listed, masked, from a
.env file, validated with the variable's name), the README's settings table, and data/fixtures."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import add_command_groups, app
from cli.settings import settings_table
from engine.settings import Settings, describe_settings
from tests.ingest_fixtures import lake_rows

pytest_plugins = ["tests.api_fixtures"]

REPO = Path(__file__).resolve().parents[1]
add_command_groups()


@pytest.fixture
def segops(monkeypatch, tmp_path):
    """Runs `segops ARGS` in-process from an empty working directory without SEGOPS_* variables
    (the commands write some into os.environ; monkeypatch puts them back)."""
    import os

    for name in {n for n in os.environ if n.startswith("SEGOPS_")} | {
            "SEGOPS_DATA_DIR", "SEGOPS_HOST", "SEGOPS_PORT", "SEGOPS_RUN_WORKERS", "SEGOPS_SERVE_PROCESS"}:
        monkeypatch.setenv(name, "")  # records the variable's state, so teardown restores it
        monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()

    def run(*args: str, **env: str):
        return runner.invoke(app, list(args), env=env or None)

    run.work = work
    return run


@pytest.mark.timeout(120)  # a `worker` that did start would run until interrupted
@pytest.mark.parametrize("command", [
    ["ingest", str(REPO / "data" / "fixtures" / "events.ndjson")],
    ["export", "1", "-o", "members.parquet"],
    ["compute", "1"],
    ["keys", "list", "--tenant", "1"],
    ["worker"],
])
def test_a_missing_data_dir_is_refused_not_created(segops, command):
    typo = segops.work / "dta"
    r = segops("--data", str(typo), *command)
    assert r.exit_code == 2, r.output
    assert f"error: no data directory {typo} (check --data or SEGOPS_DATA_DIR" in r.output
    assert "Traceback" not in r.output and not typo.exists()


def test_demo_data_and_admin_create_the_data_dir_and_say_so(segops):
    for command, data in ((["admin", "create-tenant", "Acme"], segops.work / "one"),
                          (["demo-data", "--users", "5", "--events", "50"], segops.work / "two")):
        r = segops("--data", str(data), *command)
        assert r.exit_code == 0, r.output
        assert f"created data directory {data.resolve()}" in r.output
        assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("command", [["settings"], ["serve"], ["demo-data"], ["admin", "create-tenant", "X"]])
def test_an_invalid_setting_stops_with_one_line_naming_it(segops, command):
    r = segops("--data", str(segops.work / "d"), *command, SEGOPS_PORT="abc")
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: invalid setting: SEGOPS_PORT: Input should be a valid integer, unable to parse string as an integer"]
    assert not (segops.work / "d").exists()


def test_serve_checks_its_port_like_the_setting(segops):
    r = segops("--data", str(segops.work / "d"), "serve", "--port", "70000")
    assert r.exit_code == 2 and "SEGOPS_PORT: Input should be less than or equal to 65535" in r.output


def test_settings_lists_every_variable_with_secrets_masked(segops):
    r = segops("settings", SEGOPS_SMTP_URL="smtp://mailer:hunter2@mx.test:2525", SEGOPS_SECRET_KEY="s3cr3t-value-of-at-least-32-characters",
               SEGOPS_PORT="9123", AWS_SECRET_ACCESS_KEY="aws-secret")
    assert r.exit_code == 0, r.output
    lines = dict(line.split("=", 1) for line in r.output.splitlines())
    assert list(lines) == [variable for variable, _, _ in describe_settings()]
    assert lines["SEGOPS_PORT"] == "9123"
    assert lines["SEGOPS_HOST"] == "127.0.0.1  # default"
    assert lines["SEGOPS_SMTP_URL"] == "smtp://mailer:****@mx.test:2525"
    assert lines["SEGOPS_SECRET_KEY"] == lines["SEGOPS_S3_SECRET_ACCESS_KEY"] == "****"
    assert "hunter2" not in r.output and "s3cr3t" not in r.output and "aws-secret" not in r.output


def test_settings_come_from_a_dotenv_file_and_the_environment_wins(segops):
    (segops.work / ".env").write_text("SEGOPS_PORT=9200\nSEGOPS_PUBLIC_BASE_URL=https://mail.example\n"
                                      "SEGOPS_DATA_DIR=from-dotenv\n")
    r = segops("settings", SEGOPS_PORT="9300")
    assert r.exit_code == 0, r.output
    assert "SEGOPS_PORT=9300\n" in r.output and "SEGOPS_PUBLIC_BASE_URL=https://mail.example\n" in r.output
    assert "SEGOPS_DATA_DIR=from-dotenv\n" in r.output
    (segops.work / ".env").write_text("SEGOPS_FLUSH_INTERVAL=-1\n")
    bad = segops("settings")
    assert bad.exit_code == 2 and "SEGOPS_FLUSH_INTERVAL: Input should be greater than 0" in bad.output
    (segops.work / "from-dotenv").mkdir()
    (segops.work / ".env").write_text("SEGOPS_DATA_DIR=from-dotenv\n")
    assert Settings.from_env().data_dir == Path("from-dotenv")
    ingest = segops("ingest", str(REPO / "data" / "fixtures" / "events.ndjson"))  # .env names the data dir
    assert ingest.exit_code == 0, ingest.output


def test_the_readme_settings_table_is_the_code_s():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == settings_table()
    documented = re.findall(r"^\| `(\w+\*?)`", table, re.M)  # SEGOPS_SPARK_CONF_* names a family
    assert documented == [variable for variable, _, _ in describe_settings()]
    assert len(documented) == len(Settings.model_fields)


def test_the_fixture_events_load(runtime, data_dir, tenant_a, segops):
    """data/fixtures/events.ndjson is what the README's `segops ingest` example loads."""
    fixture = REPO / "data" / "fixtures" / "events.ndjson"
    assert f"segops ingest data/fixtures/{fixture.name}" in (REPO / "README.md").read_text()
    r = segops("--data", str(data_dir), "ingest", str(fixture), "--tenant", str(tenant_a.tenant_id))
    assert r.exit_code == 0, r.output
    rows = lake_rows(runtime, tenant_a.tenant_id)
    lines = fixture.read_text().splitlines()
    assert len(rows) == len(lines) and len({row["event_id"] for row in rows}) == len(lines)
    again = segops("--data", str(data_dir), "ingest", str(fixture), "--tenant", str(tenant_a.tenant_id))
    assert f"0 written, {len(lines)} duplicate(s)" in again.output
