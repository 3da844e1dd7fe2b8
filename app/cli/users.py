"""`medvoice users ...`: account administration for admins at the console."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from app import users as svc
from workers.core.db import session_scope
from workers.core.records import Role
from workers.core.settings import get_settings

app = typer.Typer(help="Manage clinician and admin accounts.", no_args_is_help=True)
console = Console()


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        with session_scope(get_settings().resolved_database_url) as db:
            return fn(db, *args)
    except svc.UserError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc


@app.command()
def create(
    username: str,
    role: Role = typer.Option(Role.clinician, help="clinician or admin"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
) -> None:
    """Create an account (prompts for the password when --password is omitted)."""
    user = _run(lambda db: svc.create_user(db, username, password, role))
    console.print(f"created {role.value} [bold]{username}[/bold] ({user.id})")


@app.command("list")
def list_() -> None:
    """List accounts."""
    rows = _run(lambda db: [(u.username, u.role.value, u.is_active, u.created_at, u.id) for u in svc.list_users(db)])
    table = Table("username", "role", "active", "created", "id")
    for name, role, active, created, uid in rows:
        table.add_row(name, role, "yes" if active else "[red]no[/red]", f"{created:%Y-%m-%d %H:%M}", uid)
    console.print(table)


@app.command()
def disable(username: str) -> None:
    """Disable an account; its existing tokens stop working at once."""
    _run(lambda db: svc.set_active(db, username, False))
    console.print(f"disabled {username}")


@app.command()
def enable(username: str) -> None:
    """Re-enable an account (tokens issued before it was disabled stay invalid)."""
    _run(lambda db: svc.set_active(db, username, True))
    console.print(f"enabled {username}")


@app.command("set-password")
def set_password(
    username: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
) -> None:
    """Set a new password; tokens issued before now stop working."""
    _run(lambda db: svc.set_password(db, username, password))
    console.print(f"password changed for {username}")


@app.command()
def delete(username: str) -> None:
    """Delete an account that owns no consultations (otherwise disable it)."""
    _run(lambda db: svc.delete_user(db, username))
    console.print(f"deleted {username}")
