"""`segops export` (a segment's members to a local file), `segops compute` (membership now) and
`segops explain` (why a user is in or out of a segment).

All three run in this process against the data directory, like the API's worker would.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from cli.common import fail as _fail
from cli.common import open_runtime
from engine.runtime import Runtime

console = Console(stderr=True)
_CHUNK = 1 << 20


def _tenant(runtime: Runtime, tenant: int | None) -> int:
    """The given tenant, or the only one there is."""
    accounts = runtime.accounts  # (creates the account tables of a fresh data directory)
    ids = [row[0] for row in accounts.meta.query("SELECT id FROM tenants ORDER BY id")]
    if tenant is not None:
        if tenant not in ids:
            _fail(f"no tenant {tenant}")
        return tenant
    if len(ids) != 1:
        _fail(f"--tenant is required (tenants: {', '.join(map(str, ids)) or 'none'})")
    return ids[0]


def export(
    segment: int = typer.Argument(..., help="Segment id"),
    output: Path = typer.Option(..., "-o", "--output", help="File to write", dir_okay=False),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv | jsonl"),
    trait: list[str] = typer.Option([], "--trait", help="Profile trait to add as a column (repeatable)"),
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: the only tenant)"),
) -> None:
    """Export the members of a segment's current computation (with traits) to a file."""
    from engine.exports import ExportError, SegmentNotComputed
    from engine.segments.store import SegmentNotFound

    _check_destination(output)
    runtime = open_runtime()
    tenant_id = _tenant(runtime, tenant)
    try:
        created = runtime.exports.create(tenant_id, segment, fmt, trait, trigger="cli")
    except SegmentNotFound:
        _fail(f"no segment {segment} in tenant {tenant_id}")
    except SegmentNotComputed:
        _fail(f"segment {segment} has not been computed yet (run `segops compute {segment}`)")
    except ExportError as err:
        _fail(str(err))
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"export segment {segment}", total=100.0)
        done = runtime.exports.run(created["export_id"], lambda pct: progress.update(task, completed=pct))
    if done["status"] != "done":
        _fail(f"export {done['export_id']} failed: {done['error']}")
    _download(runtime, runtime.exports.file(tenant_id, done["export_id"]).key, done["bytes"], output)
    console.print(f"{done['row_count']:,} members -> {output} ({done['bytes']:,} bytes, {fmt})")
    runtime.stop()


def _check_destination(output: Path) -> None:
    """Before any work: the file must be creatable where it is asked for."""
    folder = output.parent
    if not folder.is_dir():
        _fail(f"cannot write {output}: no directory {folder}")
    if not os.access(folder, os.W_OK):
        _fail(f"cannot write {output}: directory {folder} is not writable")


def _download(runtime: Runtime, key: str, size: int, output: Path) -> None:
    """Copy the export object to ``output`` (via a temporary file, so a partial copy never
    carries the final name)."""
    partial = output.with_name(output.name + ".partial")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console) as progress:
        task = progress.add_task("download", total=size)
        with runtime.lake.store.open(key) as source, open(partial, "wb") as target:
            while chunk := source.read(_CHUNK):
                target.write(chunk)
                progress.advance(task, len(chunk))
    shutil.move(partial, output)


def compute(
    segment: int = typer.Argument(..., help="Segment id"),
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: the only tenant)"),
    backend: str | None = typer.Option(None, "--backend", help="duckdb or spark: the engine of this "
                                                               "computation (default: SEGOPS_QUERY_BACKEND)"),
) -> None:
    """Compute a segment's membership now (and any other queued computation)."""
    from engine.membership.compute import SegmentHasNoDefinition
    from engine.segments.store import SegmentNotFound

    from backends.registry import FACTORIES

    if backend is not None and backend not in FACTORIES:
        _fail(f"--backend must be one of {', '.join(FACTORIES)}, not {backend!r}")
    runtime = open_runtime()
    tenant_id = _tenant(runtime, tenant)
    try:
        job_id = runtime.compute.enqueue(tenant_id, segment, "cli", backend=backend)
    except SegmentNotFound:
        _fail(f"no segment {segment} in tenant {tenant_id}")
    except SegmentHasNoDefinition:
        _fail(f"segment {segment} has no definition yet")
    with console.status(f"computing segment {segment}"):
        runtime.compute.run_pending()
    job = runtime.compute.get_job(tenant_id, job_id)
    runtime.stop()
    if job["status"] != "done":
        _fail(f"computation {job_id} is {job['status']}: {job['error'] or 'another worker holds it'}")
    console.print(f"segment {segment}: {job['member_count']:,} members "
                  f"(+{job['entered_count']:,} / -{job['exited_count']:,}) in {job['duration_seconds']} s")


def explain(
    segment: int = typer.Argument(..., help="Segment id"),
    user: str = typer.Argument(..., help="User id"),
    as_of: str | None = typer.Option(None, "--as-of", help="ISO 8601 instant (default: now)"),
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: the only tenant)"),
) -> None:
    """Why USER is in (or out of) SEGMENT: the definition tree with each node's result and values."""
    from rich.tree import Tree

    from compiler import DefinitionError
    from engine.segments.explain import InvalidUserId, NoDefinition
    from engine.segments.store import SegmentNotFound

    runtime = open_runtime()
    tenant_id = _tenant(runtime, tenant)
    try:
        body = runtime.explainer.explain_segment(tenant_id, segment, user, as_of=as_of)
    except SegmentNotFound:
        _fail(f"no segment {segment} in tenant {tenant_id}")
    except NoDefinition:
        _fail(f"segment {segment} has no definition yet")
    except (DefinitionError, InvalidUserId) as err:
        _fail(str(err))
    finally:
        runtime.stop()
    verdict = "[green]member[/]" if body["member"] else "[red]not a member[/]"
    universe = "" if body["in_universe"] else " (not in the universe: no events, no profile)"
    tree = Tree(f"segment {segment} v{body['version']} · {user} · {body['as_of']} · {verdict}{universe}")
    _explained_tree(tree, body["explanation"])
    Console().print(tree)


def _explained_tree(parent, node: dict) -> None:
    mark = "[green]✓[/]" if node["held"] else "[red]✗[/]"
    if "logic" in node:
        branch = parent.add(f"{mark} {node['logic']} (decided by {', '.join(map(str, node['decided_by']))})")
        for child in node["conditions"]:
            _explained_tree(branch, child)
        return
    condition = {k: v for k, v in node["condition"].items() if k != "type"}
    values = {k: node[k] for k in ("value", "last_at") if k in node}
    branch = parent.add(f"{mark} {node['type']} {condition} -> {values}")
    for event in node.get("events", []) + node.get("steps", []):
        branch.add(f"[dim]{event['occurred_at']} {event['event_type']} {event['event_id']} {event['properties']}[/]")
    if node.get("definition"):
        _explained_tree(branch, node["definition"])


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("compute")(compute)
    app.command("explain")(explain)
