"""`parcelvault staff ...`: staff accounts of the support console."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parcelvault.domain.errors import DomainError, NotFound
from parcelvault.entrypoints.cli_common import fail, ready_vault
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from parcelvault.services.vault import Vault

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

staff_app = typer.Typer(no_args_is_help=True, help="Staff accounts of the support console.")


class Role(StrEnum):
    SUPPORT = "support"
    AUDITOR = "auditor"
    ADMIN = "admin"


def _vault() -> Vault:
    return ready_vault(Settings())


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    first: str = typer.prompt("Password", hide_input=True)
    second: str = typer.prompt("Repeat the password", hide_input=True)
    if first != second:
        raise fail("the two passwords differ")
    return first


@staff_app.command("create")
def create(
    username: str,
    role: Annotated[Role, typer.Option(help="support and admin sign in with a TOTP code too")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from the first stdin line")
    ] = False,
) -> None:
    """Create a staff account; prints the authenticator secret once (support, admin)."""
    from parcelvault.services import staff

    vault = _vault()
    try:
        password = _read_password(password_stdin)
        enrolment = staff.create_staff(
            vault=vault, username=username, role=role.value, password=password
        )
    except DomainError as exc:
        raise fail(str(exc)) from exc
    finally:
        vault.engine.dispose()
    out.print(f"staff account {escape(enrolment.username)} ({enrolment.role}) created.")
    if enrolment.totp_secret and enrolment.provisioning_uri:
        out.print(
            "Add it to an authenticator app now; the secret is shown only this once "
            "(scan the URI as a QR code, or type the secret):"
        )
        print(enrolment.provisioning_uri)
        print(f"secret: {enrolment.totp_secret}")


@staff_app.command("list")
def list_command() -> None:
    """List staff accounts with their role and state."""
    from parcelvault.services import staff

    vault = _vault()
    try:
        members = staff.list_staff(vault=vault)
        now = vault.clock()
    finally:
        vault.engine.dispose()
    table = Table("username", "role", "authenticator", "state", "created")
    for member in members:
        if member.disabled_at is not None:
            state = f"disabled {member.disabled_at:%Y-%m-%d}"
        elif member.locked_until is not None and member.locked_until > now:
            state = f"locked until {member.locked_until:%H:%M} UTC"
        else:
            state = "active"
        table.add_row(
            escape(member.username),
            member.role,
            "yes" if member.has_totp else "no",
            state,
            member.created_at.date().isoformat(),
        )
    out.print(table)


@staff_app.command("disable")
def disable(username: str) -> None:
    """Disable a staff account; its sessions end at once."""
    from parcelvault.services import staff

    vault = _vault()
    try:
        staff.disable_staff(vault=vault, username=username)
    except NotFound as exc:
        raise fail(f"no staff account named {username!r}") from exc
    finally:
        vault.engine.dispose()
    out.print(f"staff account {escape(username.strip().lower())} disabled; its sessions ended.")


def register(app: typer.Typer) -> None:
    app.add_typer(staff_app, name="staff")
