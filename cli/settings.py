"""``segops settings``: every ``SEGOPS_*`` variable with the value in force (secrets masked), or,
with ``--markdown``, the README's "Settings" table (a test checks that the README matches it)."""
from __future__ import annotations

import typer

from cli.common import load_settings
from engine.settings import Settings, describe_settings, shown


def settings_table() -> str:
    """The README's table: variable, default, description, from ``describe_settings``."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for variable, default, description in describe_settings():
        default = f"`{default}`" if default else ""
        description = description.replace("|", r"\|")
        rows.append(f"| `{variable}` | {default} | {description} |")
    return "\n".join(rows)


def register(app: typer.Typer) -> None:
    @app.command("settings")
    def settings_command(
        markdown: bool = typer.Option(False, "--markdown", help="Print the README's table of every variable"),
    ) -> None:
        """Print every SEGOPS_* variable with its value in force (from the environment, a .env file
        or the default); secrets are masked."""
        if markdown:
            typer.echo(settings_table())
            return
        settings = load_settings()
        # describe_settings() lists the fields in Settings.model_fields order
        for (variable, default, _), name in zip(describe_settings(), Settings.model_fields, strict=True):
            value = shown(getattr(settings, name))
            typer.echo(f"{variable}={value}" + ("" if value != shown(default or None) else "  # default"))
