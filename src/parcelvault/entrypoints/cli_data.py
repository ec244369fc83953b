"""`parcelvault import` and `parcelvault demo`: loading data in bulk."""

from __future__ import annotations

from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from parcelvault.domain.errors import DomainError
from parcelvault.entrypoints.cli_common import fail, ready_vault, skip_teardown
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from parcelvault.services.importer import ImportReport, Rejection
    from parcelvault.services.vault import Vault

# Services are imported inside the commands, so that `parcelvault --help` and the other
# commands do not pay for loading them.

out = Console()
err = Console(stderr=True)

SHOWN_REJECTIONS = 50
EXIT_REJECTED = 1
EXIT_CANNOT_RUN = 2


class FileFormat(StrEnum):
    """The choices of --format (importer.ImportFormat, without importing the importer)."""

    JSONL = "jsonl"
    CSV = "csv"


def _fail(message: str, code: int = EXIT_CANNOT_RUN) -> typer.Exit:
    return fail(message, code)


def _vault(settings: Settings) -> Vault:
    return ready_vault(settings, EXIT_CANNOT_RUN)


def _database_failure(exc: SQLAlchemyError) -> typer.Exit:
    orig = getattr(exc, "orig", None)
    if isinstance(exc, IntegrityError | DataError) or orig is None:
        reason = type(orig or exc).__name__  # their messages may quote a value
    else:
        reason = str(orig).splitlines()[0]
    return _fail(f"the database refused the import ({reason}); chunks already committed stay")


def import_command(
    file: Annotated[Path, typer.Argument(help="a .jsonl/.ndjson or .csv file")],
    tenant: Annotated[str, typer.Option(help="the tenant that owns the shipments")],
    fmt: Annotated[
        FileFormat | None, typer.Option("--format", help="default: from the file's extension")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check every line, write nothing")
    ] = False,
    errors: Annotated[
        Path | None,
        typer.Option(help="write every rejected line here as JSON Lines {line, field, message}"),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(min=1, max=50_000, help="lines per transaction", hidden=True)
    ] = None,
) -> None:
    """Import shipments and scan events from JSON Lines or CSV (see docs/import.md).

    Exit status: 0 all lines imported, 1 some lines rejected, 2 nothing could be done.
    """
    from parcelvault.services import importer

    settings = Settings()
    try:
        chosen = importer.ImportFormat(fmt.value) if fmt else importer.format_for(file)
        size = file.stat().st_size
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or type(exc).__name__}") from exc
    vault = _vault(settings)
    with ExitStack() as stack:
        sink: IO[bytes] | None = None
        if errors is not None:
            try:
                sink = stack.enter_context(errors.open("wb"))
            except OSError as exc:
                raise _fail(f"cannot write {errors}: {exc.strerror}") from exc

        def record(rejection: Rejection) -> None:
            if sink is not None:
                sink.write(orjson.dumps(rejection.as_dict()) + b"\n")

        bar = stack.enter_context(
            Progress(
                TextColumn("importing"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            )
        )
        task = bar.add_task("import", total=size)
        try:
            report = importer.import_file(
                vault=vault,
                tenant_name=tenant,
                path=file,
                fmt=chosen,
                dry_run=dry_run,
                chunk_size=chunk_size or importer.DEFAULT_CHUNK_SIZE,
                progress=lambda done: bar.update(task, completed=done),
                on_rejection=record,
            )
        except DomainError as exc:
            raise _fail(str(exc)) from exc
        except SQLAlchemyError as exc:
            raise _database_failure(exc) from exc
        finally:
            vault.engine.dispose()
            vault.keystore.engine.dispose()
    skip_teardown()
    _print_report(report, file=file, tenant=tenant, errors=errors)
    if report.rejected_lines:
        raise typer.Exit(EXIT_REJECTED)


def _print_report(report: ImportReport, *, file: Path, tenant: str, errors: Path | None) -> None:
    def say(text: str) -> None:
        out.print(text, highlight=False, soft_wrap=True, markup=False)

    if report.dry_run:
        say(f"Dry run of {file} for {tenant}: nothing was written.")
    else:
        say(f"Imported {file} for {tenant}.")
    rows = (
        ("lines read", report.lines),
        ("shipments created", report.shipments_created),
        ("shipments already present", report.shipments_present),
        ("events accepted", report.events_accepted),
        ("events already present", report.events_duplicate),
        ("lines rejected", report.rejected_lines),
    )
    for label, value in rows:
        say(f"  {label + ':':<28}{value:>10,}")
    if not report.rejections:
        return
    say("")
    say("Rejected lines:")
    for rejection in report.rejections[:SHOWN_REJECTIONS]:
        say(f"  line {rejection.line}: {rejection.field}: {rejection.message}")
    hidden = report.problems - min(len(report.rejections), SHOWN_REJECTIONS)
    if hidden > 0:
        where = f"all are in {errors}" if errors else "--errors FILE writes them all"
        say(f"  ... and {hidden:,} more problems ({where})")
    elif errors:
        say(f"  (also written to {errors})")


def demo_command(
    count: Annotated[int, typer.Option(min=1, max=100_000, help="shipments to create")] = 1000,
    seed: Annotated[int, typer.Option(help="the same seed makes the same shipments")] = 1,
) -> None:
    """Create the demo-shop tenant with fictional shipments and print a few tracking links."""
    from parcelvault.services import demo_data

    settings = Settings()
    vault = _vault(settings)
    try:
        with err.status("loading demo shipments..."):
            outcome = demo_data.load_demo(vault=vault, count=count, seed=seed)
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _database_failure(exc) from exc
    finally:
        vault.engine.dispose()
    tenant = demo_data.DEMO_TENANT
    if outcome.api_key is not None:
        out.print(f"tenant {tenant} created. API key (shown once, store it now):")
        print(outcome.api_key)
    if outcome.report is None:
        out.print(
            f"{tenant} has {outcome.shipments_before:,} shipments already; loaded nothing more.",
            highlight=False,
        )
    else:
        report = outcome.report
        out.print(
            f"{tenant}: loaded {report.shipments_created:,} shipments and "
            f"{report.events_accepted:,} scan events.",
            highlight=False,
        )
        if report.rejected_lines:
            raise _fail(f"{report.rejected_lines} demo lines were rejected", EXIT_REJECTED)
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    table = Table(title="Try these")
    table.add_column("status")
    table.add_column("tracking page", no_wrap=True)  # a link cut short is useless
    table.add_column("destination postcode", no_wrap=True)
    for link in outcome.links:
        url = f"http://{host}:{settings.port}/t/{link.tracking_number}"
        table.add_row(escape(link.status_label), escape(url), escape(link.postcode))
    # Not a terminal (a pipe, `make` output): no width to fit, so print the links whole.
    (out if out.is_terminal else Console(width=160)).print(table)
    out.print(
        "Open a link to see what anybody with the number sees; enter the postcode on the "
        "page to see what the recipient sees."
    )


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("demo")(demo_command)
