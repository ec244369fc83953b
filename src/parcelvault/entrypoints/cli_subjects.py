"""`parcelvault subjects ...`: a data subject's rights, exercised by an operator on a
person's request (export, erasure), and the reconciliation of database and key store."""

from __future__ import annotations

import getpass
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from parcelvault.entrypoints.cli_common import fail, ready_vault
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from parcelvault.services.vault import Vault

out = Console(soft_wrap=True, highlight=False)

subjects_app = typer.Typer(
    no_args_is_help=True,
    help="A person's data: export it, erase it (found by the e-mail or phone on file).",
)

EmailOption = Annotated[
    str | None, typer.Option("--email", help="the e-mail address on the person's shipments")
]
PhoneOption = Annotated[
    str | None,
    typer.Option("--phone", help="the phone number, for shipments that had no e-mail address"),
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="who acts (recorded); default: the login name")
]


class Format(StrEnum):
    json = "json"
    html = "html"


def _operator(by: str | None) -> str:
    name = by or getpass.getuser()
    return name.strip()[:48] or "operator"


def _subject(vault: Vault, email: str | None, phone: str | None) -> str:
    from parcelvault.crypto import keyed_hash

    if (email is None) == (phone is None):
        raise fail("give exactly one of --email or --phone")
    if email is not None and "@" not in email:
        raise fail("--email: not an e-mail address")
    subject = keyed_hash.subject_id(vault.keyring.lookup_key, email=email, phone=phone)
    if subject is None:
        raise fail("--email/--phone: empty")
    return subject


@subjects_app.command("export")
def export_command(
    email: EmailOption = None,
    phone: PhoneOption = None,
    output_format: Annotated[Format, typer.Option("--format")] = Format.json,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write; default: stdout")
    ] = None,
    by: ByOption = None,
) -> None:
    """Everything held about a person (GDPR Art. 15/20). Recorded as an access."""
    from parcelvault.domain.errors import NotFound
    from parcelvault.services import export

    vault = ready_vault(Settings())
    subject = _subject(vault, email, phone)
    try:
        data = export.export_subject(
            vault=vault, subject_id=subject, requested_by=f"operator:{_operator(by)}"
        )
    except NotFound:
        raise fail("no shipments for this person") from None
    if output_format is Format.json:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = export.render_html(data)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    output.chmod(0o600)
    out.print(f"export written to {escape(str(output))} ({len(data['shipments'])} shipment(s))")


@subjects_app.command("erase")
def erase_command(
    email: EmailOption = None,
    phone: PhoneOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Erase a person (GDPR Art. 17): destroy their data key, then remove what linked
    to them. Refused while a legal hold covers any of their shipments."""
    from parcelvault.domain.errors import NotFound
    from parcelvault.services import erasure
    from parcelvault.services.holds import UnderHold

    vault = ready_vault(Settings())
    subject = _subject(vault, email, phone)
    if not yes and not typer.confirm("Erase this person's data? This cannot be undone."):
        raise fail("nothing erased")
    try:
        receipt = erasure.erase_subject(vault=vault, subject_id=subject, requested_by="operator")
    except NotFound:
        raise fail("no such person (never seen, or already erased)") from None
    except UnderHold as exc:
        raise fail(exc.detail) from None
    details = erasure.receipt_details(vault=vault, receipt_id=receipt.id)
    out.print(f"erased: receipt {receipt.id}, {receipt.shipments} shipment(s)")
    out.print(
        f"ledger entry: {receipt.ledger_ref}"
        + (
            f" at index {details['ledger_index']}"
            if details["ledger_index"] is not None
            else " (index assigned by the sequencer within seconds)"
        )
    )


@subjects_app.command("receipt")
def receipt_command(receipt_id: str) -> None:
    """Show an erasure receipt with its ledger index and covering checkpoint."""
    from parcelvault.domain.errors import NotFound
    from parcelvault.services import erasure

    vault = ready_vault(Settings())
    try:
        details = erasure.receipt_details(vault=vault, receipt_id=receipt_id)
    except NotFound:
        raise fail(f"no erasure receipt {receipt_id}") from None
    sys.stdout.write(json.dumps(details, indent=2) + "\n")


def reconcile_command() -> None:
    """Re-apply erasures after the database or the key store was restored from a
    backup (also run when the service starts)."""
    from parcelvault.services import erasure

    vault = ready_vault(Settings())
    report = erasure.reconcile(vault=vault)
    out.print(
        f"keys destroyed again: {report.keys_destroyed_again}; "
        f"erasures recovered from the key store: {report.receipts_recovered}; "
        f"clean-ups finished: {report.erasures_completed}"
    )


def register(app: typer.Typer) -> None:
    from parcelvault.entrypoints.cli_keys import keys_app

    app.add_typer(subjects_app, name="subjects")
    keys_app.command("reconcile")(reconcile_command)
