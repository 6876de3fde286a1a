"""`segops demo-data` and `segops ingest FILE`: write events into the lake from the command line;
`segops dead-letters`: what the server's flusher could not write.

Both write the lake directly (not through the server's write-ahead log) and show a
progress bar. Without ``--tenant`` they use the demo tenant (created on first use,
with its API key saved in ``<data>/demo-credentials.json``).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import open_runtime
from engine.runtime import Runtime

console = Console(stderr=True)


def _tenant(runtime: Runtime, tenant: int | None) -> int:
    if tenant is None:
        from engine.accounts import bootstrap_demo

        tenant_id, _, email, _ = bootstrap_demo(runtime.accounts, runtime.settings.data_dir)
        console.print(f"demo tenant {tenant_id} ({email}); credentials in "
                      f"{Path(runtime.settings.data_dir) / 'demo-credentials.json'}")
        return tenant_id
    if runtime.accounts.get_tenant(tenant) is None:
        console.print(f"[red]error:[/] no tenant {tenant}")
        raise typer.Exit(2)
    return tenant


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console)


def demo_data(
    users: int = typer.Option(2000, min=1, help="Number of users (profiles)"),
    events: int = typer.Option(200_000, min=0, help="Number of events"),
    seed: int = typer.Option(7, help="Same seed, sizes and --end -> identical data"),
    end: datetime | None = typer.Option(None, "--end", formats=["%Y-%m-%d"],
                                        help="The data ends at 00:00 UTC of this day (default: today)"),
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: the demo tenant)"),
    if_missing: bool = typer.Option(False, "--if-missing", help="Do nothing if the tenant already has events"),
    batch_rows: int = typer.Option(1_000_000, min=1000, help="Events per lake commit"),
) -> None:
    """Write a deterministic demo dataset (shop events over the ~6 months before --end, user profiles).
    Running it again writes no event twice (event ids are deduplicated like any bulk load)."""
    from cli import demo

    runtime = open_runtime(create=True)
    tenant_id = _tenant(runtime, tenant)
    if if_missing and runtime.lake.snapshot(tenant_id).entries:
        console.print(f"tenant {tenant_id} already has events; skipping (--if-missing)")
        return
    with _progress() as progress:
        task = progress.add_task("demo events", total=events, rate="")

        def advance(rows: int) -> None:
            done = progress.tasks[0].completed + rows
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=rows, rate=f"{done / elapsed:,.0f} ev/s")

        result = demo.generate(runtime, tenant_id, users, events, seed, end=end, batch_rows=batch_rows,
                               progress=advance)
    skipped = f", {result.duplicates:,} already there" if result.duplicates else ""
    console.print(f"wrote {result.events:,} events{skipped} and {result.users:,} profiles for tenant {tenant_id} "
                  f"(seed {seed}, ending {result.end:%Y-%m-%d})")


def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Events file"),
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: the demo tenant)"),
    fmt: str | None = typer.Option(None, "--format", help="ndjson, csv or parquet (default: from the suffix)"),
    chunk_rows: int | None = typer.Option(None, min=1000, help="Events per lake commit (default 4,000,000)"),
) -> None:
    """Bulk-load an events file into the lake (validated all-or-nothing, deduplicated by event_id)."""
    from engine.ingest.bulk import BulkIngestError, ingest_file

    runtime = open_runtime()
    tenant_id = _tenant(runtime, tenant)
    try:
        with _progress() as progress:
            task = progress.add_task(f"reading {file.name}", total=None, rate="")

            def update(done: int, total: int) -> None:
                elapsed = progress.tasks[0].elapsed or 1e-9
                progress.update(task, description=f"writing {file.name}", completed=done, total=total,
                                rate=f"{done / elapsed:,.0f} ev/s")

            result = ingest_file(runtime.lake, tenant_id, file, fmt, progress=update,
                                 **({"chunk_rows": chunk_rows} if chunk_rows else {}))
    except BulkIngestError as err:
        console.print(f"[red]error:[/] {err}")
        for problem in err.problems:
            console.print(f"  {problem}")
        raise typer.Exit(2) from None
    console.print(f"{result.rows:,} rows: {result.written:,} written, {result.duplicates:,} duplicate(s) "
                  f"skipped, tenant {tenant_id}, {result.seconds:.1f} s ({result.events_per_second:,.0f} ev/s)")


def dead_letters(
    tenant: int | None = typer.Option(None, "--tenant", help="Tenant id (default: every tenant)"),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first"),
    offset: int = typer.Option(0, min=0, help="Skip this many"),
) -> None:
    """Print the records the flusher moved to <data>/dead-letter/ (one JSON object a line) and a count."""
    import orjson

    count, letters = open_runtime().dead_letters.list(tenant, limit, offset)
    for letter in letters:
        typer.echo(orjson.dumps(letter).decode())
    scope = f"tenant {tenant}" if tenant is not None else "all tenants"
    console.print(f"{count:,} dead letter(s) for {scope}; showing {len(letters)} from offset {offset}")


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
    app.command("ingest")(ingest)
    app.command("dead-letters")(dead_letters)
