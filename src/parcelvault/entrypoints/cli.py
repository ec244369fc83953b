"""The `parcelvault` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.engine import make_engine
from parcelvault.crypto.keyring import KeyFolderError, create_key_folder, key_folder_exists
from parcelvault.domain.errors import DomainError
from parcelvault.entrypoints import (
    cli_data,
    cli_keys,
    cli_ledger,
    cli_retention,
    cli_staff,
    cli_subjects,
)
from parcelvault.entrypoints.cli_common import fail, ready_vault, teardown_skippable
from parcelvault.ledger.keys import create_signer
from parcelvault.services.vault import open_keystore
from parcelvault.settings import Settings

app = typer.Typer(
    no_args_is_help=True, help="parcelvault: open about parcels, closed about people."
)
tenants_app = typer.Typer(
    no_args_is_help=True, help="Tenants (shops, carriers) and their API keys."
)
app.add_typer(tenants_app, name="tenants")
policy_app = typer.Typer(no_args_is_help=True, help="The privacy policy file.")
app.add_typer(policy_app, name="policy")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command()
def init(
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="keep existing keys instead of refusing")
    ] = False,
) -> None:
    """Create the key folder (keys mode 0600) and the database schema."""
    settings = Settings()
    if key_folder_exists(settings.key_dir):
        if not exist_ok:
            raise fail(
                f"keys already exist in {settings.key_dir}; refusing to overwrite them "
                "(use --exist-ok to keep them and only migrate the database)"
            )
        out.print(f"keys: kept the existing keys in {settings.key_dir}")
    else:
        try:
            written = create_key_folder(settings.key_dir)
        except KeyFolderError as exc:
            raise fail(str(exc)) from exc
        out.print(f"keys: wrote {len(written)} keys to {settings.key_dir} (mode 0600)")
        out.print("[yellow]Back this folder up apart from the database; see docs/operations.md.[/]")
    signer = create_signer(settings.key_dir, settings.ledger_origin)
    if signer is not None:
        out.print(f"ledger: new checkpoint signing key for the log {signer.name}")
    keystore = open_keystore(settings)
    out.print(f"key store: {keystore.engine.url.render_as_string(hide_password=True)}")
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    out.print(f"database: schema at revision {migrate.current_revision(engine)}")
    engine.dispose()
    cli_keys.adopt_after_migrate(settings)


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (and move legacy keys into the key store)."""
    settings = Settings()
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    out.print(f"database: schema at revision {migrate.current_revision(engine)}")
    engine.dispose()
    cli_keys.adopt_after_migrate(settings)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: PARCELVAULT_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: PARCELVAULT_PORT")] = None,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    jobs: Annotated[
        bool,
        typer.Option(
            "--jobs/--no-jobs",
            help="run the background jobs (`parcelvault jobs`) beside the workers; "
            "--no-jobs where they run in a process of their own",
        ),
    ] = True,
) -> None:
    """Serve the API and the tracking pages, with the background jobs beside them."""
    import os

    import uvicorn

    from parcelvault.entrypoints.jobs_process import JobsChild
    from parcelvault.logging_setup import configure_logging
    from parcelvault.services.background import reconcile_quietly

    settings = Settings()
    vault = ready_vault(settings)
    configure_logging(settings.log_level, vault.policy)
    # Erasures are reconciled before the first request, not beside it.
    reconcile_quietly(vault)
    vault.engine.dispose()
    os.environ["PARCELVAULT_JOBS_IN_API_PROCESS"] = "false"
    child = JobsChild(heartbeat_timeout=settings.jobs_heartbeat_timeout_seconds) if jobs else None
    if child is not None:
        child.start()
        # uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal
        # again for the handler it found: ours, so that the jobs are stopped too.
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
    try:
        uvicorn.run(
            "parcelvault.entrypoints.api.app:factory",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_level=settings.log_level.lower(),
            # uvicorn's own lines go through the root logger: JSON, redacted, like ours.
            log_config=None,
            access_log=False,
            proxy_headers=settings.trust_forwarded_for,
        )
    finally:
        if child is not None:
            child.stop()


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


@app.command("jobs")
def jobs_command(
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile/--no-reconcile",
            help="reconcile erasures with the key store before starting",
        ),
    ] = True,
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
    heartbeat_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the background jobs until stopped (SIGTERM or Ctrl-C): ledger appends and
    signed checkpoints, the retention sweep, SQLite checkpoints. `serve` runs one
    itself; run it on its own beside `serve --no-jobs`."""
    from parcelvault.entrypoints.jobs_process import run_until_stopped
    from parcelvault.logging_setup import configure_logging

    settings = Settings()
    vault = ready_vault(settings)
    configure_logging(settings.log_level, vault.policy)
    run_until_stopped(vault, reconcile=reconcile, parent_pid=parent_pid, heartbeat_fd=heartbeat_fd)


@tenants_app.command("create")
def tenants_create(
    name: str,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="repeat for several; default: all of shipments:write, events:write, shipments:read"
        ),
    ] = None,
) -> None:
    """Create a tenant and print its first API key (shown once)."""
    from parcelvault.services import tenants
    from parcelvault.services.vault import build

    vault = build(Settings())
    try:
        key = tenants.create_tenant(
            vault=vault, name=name, scopes=tuple(scope) if scope else tenants.SCOPES
        )
    except DomainError as exc:
        raise fail(str(exc)) from exc
    out.print(f"tenant {name} created. API key (shown once, store it now):")
    print(key)


@tenants_app.command("key")
def tenants_key(
    name: str,
    scope: Annotated[list[str] | None, typer.Option(help="repeat for several")] = None,
) -> None:
    """Issue another API key for a tenant (shown once)."""
    from parcelvault.services import tenants
    from parcelvault.services.vault import build

    vault = build(Settings())
    try:
        key = tenants.issue_key(
            vault=vault, name=name, scopes=tuple(scope) if scope else tenants.SCOPES
        )
    except DomainError as exc:
        raise fail(str(exc)) from exc
    print(key)


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with their shipment counts."""
    from rich.table import Table

    from parcelvault.adapters.db import store

    engine = make_engine(Settings().database_url)
    table = Table("tenant", "created", "shipments")
    with engine.connect() as connection:
        for name, created, count in store.list_tenants(connection):
            table.add_row(name, created.date().isoformat(), str(count))
    out.print(table)


cli_data.register(app)


@policy_app.command("check")
def policy_check(
    path: Annotated[Path | None, typer.Argument(help="default: the policy in use")] = None,
) -> None:
    """Validate a policy file and warn about risky choices; exit 1 on an error."""
    from parcelvault.privacy.policy import (
        PolicyError,
        default_policy_text,
        load_policy_text,
        risky_choices,
    )

    chosen = path or Settings().policy
    source = str(chosen) if chosen else "the shipped default policy"
    try:
        text = chosen.read_text() if chosen else default_policy_text()
        policy = load_policy_text(text, source)
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}") from exc
    except PolicyError as exc:
        raise fail(str(exc)) from exc
    warnings = risky_choices(policy)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(
        f"{source}: valid; {len(policy.fields)} personal fields, tiers {', '.join(policy.tiers)}"
        + (f"; {len(warnings)} warning(s)" if warnings else "")
    )


cli_staff.register(app)
cli_ledger.register(app)
cli_subjects.register(app)
cli_keys.register(app)
cli_retention.register(app)


def main() -> None:
    """The console script."""
    try:
        app()
    except SystemExit as done:
        if not teardown_skippable():
            raise
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        with suppress(OSError):  # a reader that went away (`| head`) misses nothing more
            if isinstance(done.code, str):
                print(done.code, file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
