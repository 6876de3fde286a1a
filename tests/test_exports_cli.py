"""`segops compute` and `segops export`: the commands through typer's parser, in-process (a fresh
interpreter per command costs seconds), plus one real `segops` process for the wiring."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from cli import segments as cli_segments
from tests.membership_fixtures import add_events, add_profiles, create_segment, frequency

pytest_plugins = ["tests.api_fixtures"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def segops(data_dir):
    app = typer.Typer()
    cli_segments.register(app)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env={"SEGOPS_DATA_DIR": str(data_dir)})

    return run


def test_compute_then_export_to_a_file(runtime, tenants, segops, tmp_path):
    a = tenants.a.tenant_id
    buyers = [f"c{i}" for i in range(6)]
    add_events(runtime, a, [(u, "buy", {}) for u in buyers] + [("x", "view", {})])
    add_profiles(runtime, a, {"c2": {"email": "two@cli.test"}})
    segment = create_segment(runtime, a, frequency("buy"))
    out = tmp_path / "members.parquet"

    not_yet = segops("export", str(segment), "--tenant", str(a), "-o", str(out))
    assert not_yet.exit_code == 2 and "has not been computed" in not_yet.output and not out.exists()
    two_tenants = segops("export", str(segment), "-o", str(out))
    assert two_tenants.exit_code == 2 and "--tenant is required" in two_tenants.output

    done = segops("compute", str(segment), "--tenant", str(a))
    assert done.exit_code == 0, done.output
    assert "6 members" in done.output

    r = segops("export", str(segment), "--tenant", str(a), "-o", str(out), "--trait", "email")
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    assert table.column("user_id").to_pylist() == buyers
    assert table.column("email").to_pylist() == [None, None, "two@cli.test", None, None, None]
    assert not list(tmp_path.glob("*.partial"))

    bad = segops("export", str(segment), "--tenant", str(a), "--format", "xlsx", "-o", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "format" in bad.output


def test_export_checks_the_destination_before_any_work(runtime, tenants, segops, tmp_path):
    a = tenants.a.tenant_id
    add_events(runtime, a, [("c1", "buy", {})])
    segment = create_segment(runtime, a, frequency("buy"))
    assert segops("compute", str(segment), "--tenant", str(a)).exit_code == 0
    missing = tmp_path / "missing" / "dir" / "members.parquet"
    r = segops("export", str(segment), "--tenant", str(a), "-o", str(missing))
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"error: cannot write {missing}: no directory {missing.parent}"]
    assert runtime.exports.get(a, 1) is None  # no export was started


def test_segops_has_the_commands():
    r = subprocess.run([sys.executable, "-c", "from cli.app import main; main()", "export", "--help"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and "--format" in r.stdout and "--tenant" in r.stdout
