"""`parcelvault keys ...`: the key-encryption key's lifecycle (rotate, retire), moving
legacy keys into the key store, and the state of all keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from parcelvault.entrypoints.cli_common import fail, ready_vault
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import TypeVar

    from parcelvault.services.vault import Vault

    T = TypeVar("T")

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

keys_app = typer.Typer(
    no_args_is_help=True,
    help="Key-encryption keys: rotate, retire, status; move legacy keys to the key store.",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _guarded(step: str, action: Callable[[], T]) -> T:
    """Run a lifecycle step, turning the errors an operator can act on into one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from parcelvault.crypto.keyring import KeyFolderError
    from parcelvault.crypto.sealing import SealError
    from parcelvault.services.key_rotation import KeyLifecycleError

    try:
        return action()
    except (KeyLifecycleError, KeyFolderError) as exc:
        raise fail(f"{step}: {exc}") from exc
    except SealError as exc:
        raise fail(
            f"{step}: {exc}. Nothing was lost: the keys already re-wrapped are stored; "
            "restore the missing key file and rerun"
        ) from exc
    except OSError as exc:
        raise fail(f"{step}: {exc.strerror or exc} ({exc.filename or 'key folder'})") from exc
    except SQLAlchemyError as exc:
        raise fail(
            f"{step}: the database or key store failed ({type(exc).__name__}); "
            "rerun to continue where it stopped"
        ) from exc


@keys_app.command("rotate")
def rotate_command(
    resume: Annotated[
        bool, typer.Option("--resume", help="only finish an unfinished rotation; never start one")
    ] = False,
    retire: Annotated[
        bool, typer.Option("--retire", help="when finished, delete the older keys' files")
    ] = False,
    batch: Annotated[int, typer.Option(min=100, max=100_000, help="keys per transaction")] = 10_000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="worker processes that unwrap and wrap beside the one writing "
            "(0: none; default: one per spare core for large stores)",
        ),
    ] = None,
) -> None:
    """Write a new key-encryption key and re-wrap every data key and staff secret with it,
    a batch per transaction, while the service keeps serving. If a rotation is
    unfinished (interrupted), continue it instead of starting another."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from parcelvault.services import key_rotation

    vault = ready_vault(Settings())
    columns = (
        TextColumn("re-wrapping keys"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("rotate", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = _guarded(
                "key rotation",
                lambda: key_rotation.rotate(
                    vault,
                    now=_now(),
                    resume_only=resume,
                    batch=batch,
                    workers=workers,
                    progress=advance,
                ),
            )
    finally:
        vault.engine.dispose()
    verb = "started rotation to" if report.new_kek else "resumed rotation to"
    out.print(f"keys: {verb} key-encryption key {report.kek_id}")
    if report.adopted:
        out.print(f"keys: moved {report.adopted} legacy keys into the key store")
    out.print(
        f"keys: re-wrapped {report.rewrapped} data keys, re-sealed {report.secrets} staff secrets"
        + (f"; {report.skipped} were erased meanwhile and stay erased" if report.skipped else "")
    )
    if not report.finished:
        raise fail(
            f"{report.remaining} keys are still wrapped by an older key-encryption key "
            "(a service is still using it?); run `parcelvault keys rotate --resume` again"
        )
    out.print(
        f"keys: rotation finished; every key is wrapped by key-encryption key {report.kek_id}"
    )
    if retire:
        _retire(vault)
    elif report.previous:
        out.print(
            "Older key-encryption keys wrap nothing now: run `parcelvault keys retire` to "
            "delete them (key-store backups made before then need them; see docs/operations.md)."
        )


def _retire(vault: Vault) -> None:
    from parcelvault.services import key_rotation

    result = _guarded("retiring keys", lambda: key_rotation.retire(vault, now=_now()))
    for kek in result.retired:
        out.print(f"keys: retired key-encryption key {kek} (its file is deleted)")
    for kek, uses in result.still_needed.items():
        err.print(f"[yellow]kept[/] key-encryption key {kek}: it still wraps {escape(uses)}")
    if not result.retired and not result.still_needed:
        out.print("keys: no older key-encryption keys to retire")


@keys_app.command("retire")
def retire_command() -> None:
    """Delete the files of older key-encryption keys that wrap nothing any more."""
    vault = ready_vault(Settings())
    try:
        _retire(vault)
    finally:
        vault.engine.dispose()


@keys_app.command("adopt")
def adopt_command() -> None:
    """Move wrapped keys kept in the database by older versions into the key store."""
    vault = ready_vault(Settings())
    try:
        adopted = _adopt(vault)
    finally:
        vault.engine.dispose()
    if adopted == 0:
        out.print("keys: no legacy keys left in the database")


def _adopt(vault: Vault) -> int:
    from parcelvault.services import key_rotation

    result = _guarded(
        "moving legacy keys",
        lambda: key_rotation.adopt_legacy(vault.engine, vault.keystore, now=_now()),
    )
    if result.moved:
        out.print(f"keys: moved {result.moved} legacy keys from the database into the key store")
    if result.conflicts:
        raise fail(
            f"{result.conflicts} subjects have a legacy key that differs from the key the key "
            "store holds for them; they were left as they are"
        )
    return result.moved


def adopt_after_migrate(settings: Settings) -> None:
    """`init --exist-ok` and `migrate`: move legacy keys if there are any and keys exist."""
    from sqlalchemy import select

    from parcelvault.adapters.db.engine import make_engine
    from parcelvault.adapters.db.tables import subjects
    from parcelvault.crypto.keyring import key_folder_exists

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            legacy = connection.execute(
                select(subjects.c.id).where(subjects.c.wrapped_key.is_not(None)).limit(1)
            ).first()
    finally:
        engine.dispose()
    if legacy is None:
        return
    if not key_folder_exists(settings.key_dir) and settings.keystore_url is None:
        err.print(
            "[yellow]warning:[/] the database holds legacy keys but there is no key folder; "
            "run `parcelvault keys adopt` once the keys are in place"
        )
        return
    vault = ready_vault(settings)
    try:
        _adopt(vault)
    finally:
        vault.engine.dispose()


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value is not None else "-"


def _age(value: datetime | None, now: datetime) -> str:
    return f"{(now - value).days} d" if value is not None else "-"


@keys_app.command("status")
def status_command() -> None:
    """Each key-encryption key (age, what it wraps), the active one, whether a rotation is
    unfinished, what is due, where the key store is and how many keys were destroyed."""
    from rich.table import Table

    from parcelvault.services import key_rotation

    vault = ready_vault(Settings())
    now = _now()
    try:
        state = _guarded("key status", lambda: key_rotation.status(vault, now=now))
    finally:
        vault.engine.dispose()
    table = Table("KEK", "state", "since", "age", "data keys", "staff secrets", "legacy keys")
    for kek in state.keks:
        if kek.active:
            label = "[green]active[/]"
        elif kek.present:
            label = "older"
        elif kek.retired_at is not None and not (kek.keys or kek.secrets or kek.legacy):
            label = f"retired {_day(kek.retired_at)}"
        else:
            label = "[red]MISSING[/]"
        table.add_row(
            str(kek.kek_id),
            label,
            _day(kek.since),
            _age(kek.since, now),
            str(kek.keys),
            str(kek.secrets),
            str(kek.legacy),
        )
    out.print(table)
    out.print(f"active key-encryption key: {state.active}")
    out.print(f"rotation: {'UNFINISHED' if state.unfinished else 'none in progress'}")
    out.print(f"key store: {escape(state.keystore)}")
    out.print(f"destroyed keys (erasures): {state.destroyed}")
    since = state.signer_since
    out.print(f"checkpoint signing key: since {_day(since)} ({_age(since, now)})")
    for line in _due_lines(state.due):
        out.print(line)


def _due_lines(due: tuple[str, ...]) -> Iterator[str]:
    if not due:
        yield "due: nothing"
        return
    yield "due:"
    for item in due:
        yield f"  - {escape(item)}"


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
