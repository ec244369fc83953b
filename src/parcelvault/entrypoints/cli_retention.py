"""`parcelvault retention run` and `parcelvault holds ...`: removing values whose
retention period ended, and the legal holds that keep a shipment's data meanwhile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parcelvault.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from parcelvault.entrypoints.cli_common import fail, ready_vault
from parcelvault.settings import Settings

if TYPE_CHECKING:
    from parcelvault.services.retention import SweepReport
    from parcelvault.services.vault import Vault

out = Console(soft_wrap=True, highlight=False)

retention_app = typer.Typer(
    no_args_is_help=True, help="Remove personal values whose retention period has ended."
)
holds_app = typer.Typer(
    no_args_is_help=True,
    help="Legal holds: a held shipment keeps its data from erasure and retention.",
)

MAX_ACTOR = 64


def _table(*names: str) -> Table:
    table = Table()
    for name in names:
        table.add_column(name, overflow="fold")
    return table


def _vault() -> Vault:
    return ready_vault(Settings())


@retention_app.command("run")
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="change nothing; report what would be removed")
    ] = False,
    recheck_all: Annotated[
        bool,
        typer.Option(
            "--recheck-all",
            help="decide every shipment again under the policy in force, not only those "
            "due: after shortening a retention period, or giving a field one",
        ),
    ] = False,
) -> None:
    """Remove now every value whose retention period has ended (`serve` does this on
    its own every PARCELVAULT_RETENTION_INTERVAL_SECONDS)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from parcelvault.services.retention import sweep

    vault = _vault()
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=out, transient=True) as bar:
            task = bar.add_task("shipments", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = sweep(vault, dry_run=dry_run, progress=advance, everything=recheck_all)
    finally:
        vault.engine.dispose()
    _print_report(report)


def _print_report(report: SweepReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    title = "retention (dry run, nothing was changed)" if report.dry_run else "retention"
    out.print(
        f"{title}: {report.examined} shipments due to be looked at, "
        f"{verb} {report.values_removed} values from {report.shipments_changed} shipments "
        f"in {report.seconds:.1f} s"
    )
    if report.removed:
        table = _table("field", f"values {verb}")
        for name, count in sorted(report.removed.items()):
            table.add_row(name, str(count))
        out.print(table)
    if report.held:
        out.print(f"skipped {len(report.held)} shipments under legal hold:")
        held = _table("tracking number", "case")
        for shipment in report.held:
            held.add_row(shipment.tracking_number, ", ".join(shipment.case_refs))
        out.print(held)
    if report.next_due is not None:
        out.print(f"next due: {report.next_due:%Y-%m-%d %H:%M:%S} UTC")
    else:
        out.print("next due: nothing is scheduled")


def _actor(value: str, option: str) -> str:
    cleaned = value.strip()
    if not cleaned or len(cleaned) > MAX_ACTOR or not cleaned.isprintable():
        raise fail(f"{option}: 1-{MAX_ACTOR} printable characters naming who acts")
    return cleaned


@holds_app.command("place")
def place(
    tracking_number: str,
    case: Annotated[str, typer.Option("--case", help="the case or claim number (not a name)")],
    by: Annotated[str, typer.Option("--by", help="who places the hold")] = "cli",
    tenant: Annotated[
        str | None, typer.Option(help="the owning tenant, when tenants share the number")
    ] = None,
) -> None:
    """Place a legal hold on a shipment: retention and erasure leave its data alone."""
    from parcelvault.services import holds

    placed_by = _actor(by, "--by")
    vault = _vault()
    try:
        hold = holds.place(
            vault=vault,
            raw_number=tracking_number,
            case_ref=case,
            placed_by=placed_by,
            tenant=tenant,
        )
    except InvalidInput as exc:
        problem = exc.problems[0]
        name = "--case" if problem.loc == ("case_ref",) else problem.path()
        raise fail(f"{name}: {problem.message}") from exc
    except NotFound as exc:
        raise fail(
            "TRACKING_NUMBER: no shipment has this number"
            + ("" if tenant else " (if tenants share it, name one with --tenant)")
        ) from exc
    except DomainError as exc:
        raise fail(str(exc)) from exc
    finally:
        vault.engine.dispose()
    out.print(
        f"hold {hold.id} placed on {escape(hold.tracking_number)} "
        f"for case {escape(hold.case_ref)} by {escape(hold.placed_by)}"
    )


@holds_app.command("release")
def release(
    hold_id: Annotated[int, typer.Argument(help="the hold's number (see `holds list`)")],
    by: Annotated[str, typer.Option("--by", help="who releases the hold")] = "cli",
) -> None:
    """Release a hold; the shipment's due retention applies at the next sweep."""
    from parcelvault.services import holds

    released_by = _actor(by, "--by")
    vault = _vault()
    try:
        hold = holds.release(vault=vault, hold_id=hold_id, released_by=released_by)
    except NotFound as exc:
        raise fail(f"HOLD_ID: there is no hold {hold_id}") from exc
    except Conflict as exc:
        raise fail(f"HOLD_ID: {exc}") from exc
    finally:
        vault.engine.dispose()
    out.print(
        f"hold {hold.id} on {escape(hold.tracking_number)} (case {escape(hold.case_ref)}) released"
    )


@holds_app.command("list")
def list_command(
    all_: Annotated[bool, typer.Option("--all", help="released holds too")] = False,
) -> None:
    """Holds in force (or all holds), oldest first."""
    from parcelvault.services import holds

    vault = _vault()
    try:
        lines = holds.list_holds(vault=vault, include_released=all_)
    finally:
        vault.engine.dispose()
    if not lines:
        out.print("no holds in force" if not all_ else "no holds")
        return
    columns = ["id", "tracking number", "case", "placed by", "placed at (UTC)"]
    if all_:
        columns += ["released at (UTC)", "released by"]
    table = _table(*columns)
    for line in lines:
        hold = line.hold
        cells = [
            str(hold.id),
            hold.tracking_number,
            hold.case_ref,
            hold.placed_by,
            f"{hold.placed_at:%Y-%m-%d %H:%M}",
        ]
        if all_:
            released = line.released_at
            cells += [
                f"{released:%Y-%m-%d %H:%M}" if released else "in force",
                line.released_by or "",
            ]
        table.add_row(*(escape(cell) for cell in cells))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(retention_app, name="retention")
    app.add_typer(holds_app, name="holds")
