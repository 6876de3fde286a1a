"""``segops settings``: every ``SEGOPS_*`` variable with the value in force (secrets masked), or,
with ``--markdown``, the README's "Settings" table (a test checks that the README matches it)."""
from __future__ import annotations

import re

import typer
from pydantic import SecretStr

from cli.common import load_settings
from engine.settings import Settings, describe_settings

_URL_PASSWORD = re.compile(r"(://[^/:@]*:)[^/@]*@")
_SECRET_CONF_KEY = re.compile(r"secret|password|key", re.I)  # spark.hadoop.fs.s3a.secret.key, ...


def settings_table() -> str:
    """The README's table: variable, default, description, from ``describe_settings``."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for variable, default, description in describe_settings():
        default = f"`{default}`" if default else ""
        description = description.replace("|", r"\|")
        rows.append(f"| `{variable}` | {default} | {description} |")
    return "\n".join(rows)


def shown(value: object) -> str:
    """A value as printed: secrets and passwords in URLs masked, None as empty."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "****"
    if isinstance(value, dict):  # SEGOPS_SPARK_CONF_*: key=value pairs, credential-like keys masked
        return "; ".join(f"{key}={'****' if _SECRET_CONF_KEY.search(key) else shown(item)}"
                        for key, item in sorted(value.items()))
    return _URL_PASSWORD.sub(r"\1****@", str(value))


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
