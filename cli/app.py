"""The `segops` command. Each command group lives in its own module; this file only wires them.

`serve` hands uvicorn the import string of the API's app factory, so the engine
never imports the api package (imports point downward).
"""
from __future__ import annotations

import os
from pathlib import Path

import typer

from cli import admin as cli_admin

from cli import data as cli_data

from cli import segments as cli_segments

from cli import worker as cli_worker

from cli import settings as cli_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="segops: analytical segmentation engine")


@app.callback()
def _root(data: Path | None = typer.Option(None, "--data", envvar="SEGOPS_DATA_DIR",
                                           help="Data directory (default: data)")) -> None:
    if data is not None:  # else SEGOPS_DATA_DIR from a .env file, or the default
        os.environ["SEGOPS_DATA_DIR"] = str(data)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to bind (default: SEGOPS_HOST, else 127.0.0.1)"),
    port: int | None = typer.Option(None, help="Port to bind (default: SEGOPS_PORT, else 8000)"),
    workers: bool | None = typer.Option(None, "--workers/--no-workers", help="Run background workers (flush, "
                                        "schedule, journeys) in-process (default: SEGOPS_RUN_WORKERS, else on)"),
    log_format: str | None = typer.Option(None, "--log-format", help="text or json (default: SEGOPS_LOG_FORMAT, "
                                                                     "text); SEGOPS_ACCESS_LOG=0 drops access lines"),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from cli.common import check_data_dir, fail, load_settings
    from engine.logs import configure_logging
    from storage.wal import in_use

    # Through the environment, so the app factory (in this process) sees the same host, port and
    # log format: the links in emails (Settings.base_url) point at this server.
    os.environ.update({name: str(value) for name, value in (("SEGOPS_HOST", host), ("SEGOPS_PORT", port),
                                                            ("SEGOPS_LOG_FORMAT", log_format))
                       if value is not None})
    if workers is not None:
        os.environ["SEGOPS_RUN_WORKERS"] = "1" if workers else "0"
    os.environ["SEGOPS_SERVE_PROCESS"] = "1"
    settings = load_settings()
    check_data_dir(settings, create=True)
    if settings.run_workers and not settings.read_only and in_use(settings.wal_dir):
        fail(f"another segops process already serves {settings.data_dir} (its write-ahead log is locked); "
             "stop it, or serve another --data directory")
    configure_logging(settings.log_format, settings.access_log)
    _print_demo_credentials(settings)
    # log_config=None: uvicorn's lines go through configure_logging's handler; the access log is ours (api.observe)
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port, log_level="info",
                loop="uvloop", http="httptools", access_log=False, log_config=None)


def _print_demo_credentials(settings) -> None:
    """`make serve` promises a demo API key on every start; it lives in <data>/demo-credentials.json."""
    import orjson

    path = settings.data_dir / "demo-credentials.json"
    if not path.exists():
        return
    creds = orjson.loads(path.read_bytes())
    base = settings.base_url
    typer.echo(
        f"\n  segops demo tenant {creds['tenant_id']}\n"
        f"  API key : {creds['api_key']}\n"
        f"  login   : {creds['email']} / {creds['password']}\n"
        f"  try     : curl -H 'Authorization: ApiKey {creds['api_key']}' {base}/api/segments/\n"
        f"  docs    : {base}/docs\n"
    )


def add_command_groups() -> None:
    """Add the command groups owned by feature modules (each exposes ``register(app)``)."""
    for module in (cli_data, cli_admin, cli_segments, cli_worker, cli_settings):
        module.register(app)


def main() -> None:
    add_command_groups()
    app()
