"""`segops admin ...` (tenants, users) and `segops keys ...` (API keys) on the local metadata database."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from engine.accounts import PLANS, ROLES, SCOPES, AccountError
from cli.common import fail, open_runtime

admin_app = typer.Typer(no_args_is_help=True, help="Tenants and users.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (the key is printed once, at creation).")
console = Console()


def _fail(err: AccountError) -> None:
    fail(str(err))


@admin_app.command("create-tenant")
def create_tenant(
    name: str,
    plan: str = typer.Option("free", help=f"One of: {', '.join(PLANS)}"),
    rate_limit: int | None = typer.Option(None, help="API calls per minute, overriding the plan's"),
) -> None:
    """Create a tenant (organization); prints its id."""
    try:
        tenant_id = open_runtime(create=True).accounts.create_tenant(name, plan, rate_limit)
    except AccountError as err:
        _fail(err)
    typer.echo(tenant_id)


@admin_app.command("set-plan")
def set_plan(
    tenant: int = typer.Option(..., "--tenant", help="Tenant id"),
    plan: str = typer.Option(..., help=f"One of: {', '.join(PLANS)}"),
    rate_limit: int | None = typer.Option(None, help="API calls per minute, overriding the plan's"),
) -> None:
    """Change a tenant's plan and rate limit."""
    try:
        open_runtime(create=True).accounts.set_plan(tenant, plan, rate_limit)
    except AccountError as err:
        _fail(err)


@admin_app.command("create-user")
def create_user(
    tenant: int = typer.Option(..., "--tenant", help="Tenant id"),
    email: str = typer.Option(...),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    role: str = typer.Option("viewer", help=f"One of: {', '.join(ROLES)}"),
) -> None:
    """Create a user who logs in with email and password; prints its id."""
    try:
        user_id = open_runtime(create=True).accounts.create_user(tenant, email, password, role)
    except AccountError as err:
        _fail(err)
    typer.echo(user_id)


@keys_app.command("create")
def create_key(
    tenant: int = typer.Option(..., "--tenant", help="Tenant id"),
    name: str = typer.Option(..., "--name"),
    scope: list[str] = typer.Option(..., "--scope", help=f"Repeatable; 'all' or any of: {', '.join(SCOPES)}"),
    allow_sends: bool = typer.Option(False, "--allow-sends", help="May redeem sends (sends:write)"),
) -> None:
    """Mint an API key and print it once; only its hash is stored."""
    scopes = list(SCOPES) if "all" in scope else scope
    try:
        listing, key = open_runtime().accounts.create_api_key(tenant, name, scopes, allow_sends)
    except AccountError as err:
        _fail(err)
    typer.echo(f"id: {listing['id']}", err=True)
    typer.echo("Store this key now; it will not be shown again:", err=True)
    typer.echo(key)


@keys_app.command("list")
def list_keys(tenant: int = typer.Option(..., "--tenant", help="Tenant id")) -> None:
    """List a tenant's keys (prefix only, never the key)."""
    _, keys = open_runtime().accounts.list_api_keys(tenant, limit=1_000_000)
    table = Table("id", "name", "prefix", "scopes", "allow_sends", "created_at", "revoked_at")
    for k in keys:
        table.add_row(str(k["id"]), k["name"], k["prefix"] + "…", " ".join(k["scopes"]),
                      "yes" if k["allow_sends"] else "no", k["created_at"], k["revoked_at"] or "")
    console.print(table)


@keys_app.command("revoke")
def revoke_key(
    key_id: int = typer.Argument(..., help="Key id"),
    tenant: int = typer.Option(..., "--tenant", help="Tenant id"),
) -> None:
    """Revoke a key; API processes drop it from their caches within 30 s (at once in this process)."""
    if not open_runtime().accounts.revoke_api_key(tenant, key_id):
        typer.echo(f"error: tenant {tenant} has no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
    app.add_typer(keys_app, name="keys")
