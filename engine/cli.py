"""The `segops` command. Each command group lives in its own module; this file only wires them.

`serve` hands uvicorn the import string of the API's app factory, so the engine
never imports the api package (imports point downward).
"""
from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="segops: analytical segmentation engine")


@app.callback()
def _root(data: Path = typer.Option(Path("data"), "--data", envvar="SEGOPS_DATA_DIR", help="Data directory")) -> None:
    os.environ["SEGOPS_DATA_DIR"] = str(data)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: bool = typer.Option(True, help="Run background workers (flush, schedule, journeys) in-process"),
    log_format: str | None = typer.Option(None, "--log-format", help="text or json (default: SEGOPS_LOG_FORMAT, "
                                                                     "text); SEGOPS_ACCESS_LOG=0 drops access lines"),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from engine.logs import configure_logging
    from engine.settings import Settings, SettingsError

    os.environ["SEGOPS_RUN_WORKERS"] = "1" if workers else "0"
    os.environ["SEGOPS_SERVE_PROCESS"] = "1"
    if log_format is not None:
        os.environ["SEGOPS_LOG_FORMAT"] = log_format
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format, settings.access_log)
    _print_demo_credentials(host, port)
    # log_config=None: uvicorn's lines go through configure_logging's handler; the access log is ours (api.observe)
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info",
                loop="uvloop", http="httptools", access_log=False, log_config=None)


def _print_demo_credentials(host: str, port: int) -> None:
    """`make serve` promises a demo API key on every start; it lives in <data>/demo-credentials.json."""
    import orjson

    path = Path(os.environ.get("SEGOPS_DATA_DIR", "data")) / "demo-credentials.json"
    if not path.exists():
        return
    creds = orjson.loads(path.read_bytes())
    base = f"http://{host}:{port}"
    typer.echo(
        f"\n  segops demo tenant {creds['tenant_id']}\n"
        f"  API key : {creds['api_key']}\n"
        f"  login   : {creds['email']} / {creds['password']}\n"
        f"  try     : curl -H 'Authorization: ApiKey {creds['api_key']}' {base}/api/segments/\n"
        f"  docs    : {base}/docs\n"
    )


def _register() -> None:
    # Command groups owned by feature modules; each exposes `register(app)`.
    import importlib

    for name in ("engine.cli_data", "engine.cli_admin", "engine.cli_segments", "engine.cli_sends"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a feature not built yet
            if exc.name != name:
                raise
            continue
        module.register(app)


def main() -> None:
    _register()
    app()
