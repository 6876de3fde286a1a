"""What every `segops` command shares: its settings, its data directory, its Runtime.

A setting that fails validation ends the command with one line naming the variable (exit 2),
not a traceback. Only the commands that set a data directory up (`serve`, `demo-data`,
`admin`) may create one; the others refuse a missing one, so a typo in ``--data`` cannot
quietly start a second, empty installation with new credentials.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer

from engine.settings import Settings, SettingsError

if TYPE_CHECKING:
    from engine.runtime import Runtime


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def load_settings(**overrides) -> Settings:
    """``Settings.from_env``, or exit 2 with the variable's name and problem."""
    try:
        return Settings.from_env(**overrides)
    except SettingsError as err:
        fail(f"invalid setting: {err}")


def check_data_dir(settings: Settings, *, create: bool) -> None:
    """Refuse a missing data directory, or (``create``) make it and say so."""
    path = settings.data_dir
    if path.is_dir():
        return
    if path.exists():
        fail(f"data directory {path} is not a directory")
    if not create:
        fail(f"no data directory {path} (check --data or SEGOPS_DATA_DIR; "
             "`segops demo-data` or `segops admin create-tenant` sets one up)")
    settings.ensure_data_dir()
    typer.echo(f"created data directory {path.resolve()}", err=True)


def open_runtime(*, create: bool = False, workers: bool = False, **overrides) -> "Runtime":
    """The Runtime a command works with; without ``workers``, background workers stay off;
    ``overrides`` are settings a command's options set (``compute --backend``)."""
    from engine.runtime import Runtime

    settings = load_settings(**overrides) if workers else load_settings(run_workers=False, **overrides)
    check_data_dir(settings, create=create)
    return Runtime(settings)
