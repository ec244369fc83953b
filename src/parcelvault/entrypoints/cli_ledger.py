"""`parcelvault ledger ...`: the transparency log's key, sequencing, checkpoints, the
tamper audit and offline proof bundles."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from parcelvault.entrypoints.cli_common import fail
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection, Engine

    from parcelvault.ledger.note import Signer, Verifier

# Heavy modules are imported inside the commands; `verify-bundle` in particular never
# touches the settings' database.

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

ledger_app = typer.Typer(
    no_args_is_help=True, help="The transparency log: checkpoints, audits and proof bundles."
)

EXIT_TAMPERED = 1
EXIT_CANNOT_RUN = 2

KeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--key",
        help="a verifier key (name+id+base64) to accept, e.g. of a rotated signing key; "
        "repeat for several",
    ),
]


def _now() -> datetime:
    return datetime.now(UTC)


def _signer(settings: Settings) -> Signer:
    from parcelvault.ledger.keys import load_signer
    from parcelvault.ledger.note import NoteError

    try:
        return load_signer(settings.key_dir)
    except (OSError, NoteError) as exc:
        raise fail(f"cannot load the ledger signing key: {exc}", EXIT_CANNOT_RUN) from exc


def _verifiers(keys: list[str] | None) -> list[Verifier]:
    from parcelvault.ledger.note import NoteError, parse_verifier_key

    parsed = []
    for number, text in enumerate(keys or [], start=1):
        try:
            parsed.append(parse_verifier_key(text.strip()))
        except NoteError as exc:
            raise fail(f"--key number {number}: {exc}", EXIT_CANNOT_RUN) from exc
    return parsed


def _engine(settings: Settings) -> Engine:
    from sqlalchemy.exc import SQLAlchemyError

    from parcelvault.adapters.db import migrate
    from parcelvault.adapters.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        current, head = migrate.current_revision(engine), migrate.SCHEMA_HEAD
    except SQLAlchemyError as exc:
        engine.dispose()
        raise fail(f"cannot open the database: {type(exc).__name__}", EXIT_CANNOT_RUN) from exc
    if current != head:
        engine.dispose()
        raise fail(
            "the database schema is not up to date; run `parcelvault migrate`", EXIT_CANNOT_RUN
        )
    return engine


@ledger_app.command("key")
def key_command(
    retired: Annotated[
        bool, typer.Option("--retired", help="also print earlier keys, one a line after it")
    ] = False,
) -> None:
    """Print the log's verifier key: what anyone needs to check checkpoints and bundles."""
    from parcelvault.ledger.keys import retired_verifiers
    from parcelvault.ledger.note import NoteError, format_verifier_key

    settings = Settings()
    print(format_verifier_key(_signer(settings).verifier))
    if retired:
        try:
            earlier = retired_verifiers(settings.key_dir)
        except (OSError, NoteError) as exc:
            raise fail(f"cannot read the retired ledger keys: {exc}", EXIT_CANNOT_RUN) from exc
        for entry in reversed(earlier):
            print(entry.key)


@ledger_app.command("rotate-key")
def rotate_key_command() -> None:
    """Replace the checkpoint signing key. The old key signs a last checkpoint covering a
    key_rotation entry that names both keys; its public key is kept (see `ledger key
    --retired`), so checkpoints and bundles signed before still verify."""
    from parcelvault.ledger.note import NoteError
    from parcelvault.services.signer_rotation import rotate_signer

    settings = Settings()
    _signer(settings)
    engine = _engine(settings)
    try:
        rotated = rotate_signer(engine, settings.key_dir, now=_now())
    except (OSError, NoteError, LookupError) as exc:
        raise fail(f"cannot rotate the ledger signing key: {exc}", EXIT_CANNOT_RUN) from exc
    finally:
        engine.dispose()
    signed = (
        "no checkpoint"
        if rotated.last_size is None
        else f"checkpoints up to size {rotated.last_size}"
    )
    out.print(f"ledger: retired key {rotated.retired} ({signed})")
    out.print(f"ledger: new key {rotated.current}")
    out.print(
        "Publish the new key beside the old one; keep the old one for checking "
        "older checkpoints and proof bundles."
    )


@ledger_app.command("sequence")
def sequence_command(
    limit: Annotated[int, typer.Option(min=1, help="the most entries to append")] = 50_000,
) -> None:
    """Append waiting events, access records and queued entries to the log (one round)."""
    from parcelvault.ledger import log

    engine = _engine(Settings())
    try:
        appended = log.sequence(engine, now=_now(), limit=limit)
        with engine.connect() as connection:
            size = log.size(connection)
    finally:
        engine.dispose()
    out.print(f"ledger: appended {appended} entries; the log has {size} entries")


@ledger_app.command("checkpoint")
def checkpoint_command() -> None:
    """Sign a checkpoint of the log as it is now (unless the latest one covers it)."""
    import base64

    from parcelvault.ledger import log

    settings = Settings()
    signer = _signer(settings)
    engine = _engine(settings)
    try:
        signed = log.checkpoint(engine, signer=signer, now=_now())
    except log.LedgerError as exc:
        raise fail(f"{exc}; run `parcelvault ledger verify`") from exc
    finally:
        engine.dispose()
    root = base64.b64encode(signed.root).decode("ascii")
    out.print(f"ledger: checkpoint of size {signed.size}, root {root}")


@ledger_app.command("verify")
def verify_command(key: KeyOption = None) -> None:
    """Check the whole stored log (entries, tree nodes, checkpoints); exit 1 on tampering.

    Checkpoints must be signed by the key in the key folder or by a --key; with --key the
    signing key itself is not needed, so an auditor can check a copy of the database."""
    import base64

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from parcelvault.ledger.keys import SIGNER_FILE, retired_verifiers
    from parcelvault.ledger.note import NoteError
    from parcelvault.services.ledger_audit import audit

    settings = Settings()
    verifiers = _verifiers(key)
    if not verifiers or (settings.key_dir / SIGNER_FILE).exists():
        verifiers.insert(0, _signer(settings).verifier)
    try:
        verifiers += [r.verifier for r in retired_verifiers(settings.key_dir)]
    except (OSError, NoteError) as exc:
        raise fail(f"cannot read the retired ledger keys: {exc}", EXIT_CANNOT_RUN) from exc
    engine = _engine(settings)
    columns = (
        TextColumn("checking the log"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(
            *columns, console=err, transient=True, disable=not err.is_terminal
        ) as progress:
            task = progress.add_task("verify", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = audit(engine, verifiers=verifiers, progress=advance)
    finally:
        engine.dispose()
    if report.finding is not None:
        err.print(
            f"[bold red]TAMPERED[/] at {escape(report.finding.where())}: "
            f"{escape(report.finding.reason)}"
        )
        raise typer.Exit(EXIT_TAMPERED)
    root = base64.b64encode(report.root).decode("ascii")
    out.print(
        f"ledger: OK. {report.size} entries ({report.erased} erased), "
        f"{report.checkpoints} checkpoint{'' if report.checkpoints == 1 else 's'}; root {root}"
    )


OutputOption = Annotated[
    Path | None, typer.Option("-o", "--output", help="write the bundle here (default: stdout)")
]


def _prove(output: Path | None, locate: Callable[[Connection], int]) -> None:
    from parcelvault.ledger.bundle import BundleError, format_bundle, make_bundle

    engine = _engine(Settings())
    try:
        with engine.connect() as connection:
            index = locate(connection)
            text = format_bundle(make_bundle(connection, index))
    except BundleError as exc:
        raise fail(str(exc)) from exc
    finally:
        engine.dispose()
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", EXIT_CANNOT_RUN) from exc
    out.print(f"ledger: wrote the proof of entry {index} to {escape(str(output))}")


@ledger_app.command("prove-event")
def prove_event_command(
    event_id: Annotated[str, typer.Argument(help="the event_id the tenant gave the scan")],
    tenant: Annotated[str, typer.Option(help="the tenant that posted the event")],
    output: OutputOption = None,
) -> None:
    """Write an offline proof (C2SP tlog-proof) that a scan event is in the log."""
    from parcelvault.ledger.bundle import event_index

    _prove(output, lambda connection: event_index(connection, tenant=tenant, event_id=event_id))


@ledger_app.command("prove-access")
def prove_access_command(
    index: Annotated[
        int, typer.Argument(min=0, help="the access record's ledger index (its leaf)")
    ],
    output: OutputOption = None,
) -> None:
    """Write an offline proof that an access record is in the log. The bundle carries the
    record itself (who saw which fields of a subject, why): give it only to that subject."""
    from parcelvault.ledger.bundle import require_kind

    def locate(connection: Connection) -> int:
        require_kind(connection, index, "access")
        return index

    _prove(output, locate)


@ledger_app.command("verify-bundle")
def verify_bundle_command(
    path: Annotated[Path, typer.Argument(help="the bundle file, or - for stdin")],
    key: Annotated[
        list[str], typer.Option("--key", help="the log's verifier key; repeat for several")
    ],
) -> None:
    """Check a proof bundle offline, without the database; exit 1 if it does not verify."""
    from parcelvault.ledger.bundle import MAX_BUNDLE_BYTES, BundleError, verify_bundle

    verifiers = _verifiers(key)
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read(MAX_BUNDLE_BYTES + 1)
        else:
            with path.open("rb") as handle:
                raw = handle.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", EXIT_CANNOT_RUN) from exc
    try:
        verified = verify_bundle(raw, verifiers)
    except BundleError as exc:
        err.print(f"[bold red]FAILED:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    out.print(
        f"OK: entry {verified.index} ({verified.kind}) is in the log {escape(verified.origin)} "
        f"of {verified.size} entries"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")
