"""What every CLI command group shares: error output and the readiness check.
Kept free of heavy imports, so commands that need no database start fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from parcelvault.settings import Settings

if TYPE_CHECKING:
    from parcelvault.services.vault import Vault

err = Console(stderr=True, soft_wrap=True)

_teardown_skippable = False


def skip_teardown() -> None:
    """Let the process end without Python's teardown once this command returns: a
    command that built a large heap (an import of hundreds of thousands of lines)
    spent a fifth of a second freeing, object by object, memory the system frees at
    once. Call it only after everything the command opened is closed (database
    engines disposed, files closed, processes joined); `main` still flushes the output
    and the logs. Has no effect where the command runs inside another program (tests)."""
    global _teardown_skippable
    _teardown_skippable = True


def teardown_skippable() -> bool:
    return _teardown_skippable


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def require_ready(settings: Settings, code: int = 1) -> None:
    """Refuse to go on without keys or with a database schema behind the code."""
    from parcelvault.adapters.db import migrate
    from parcelvault.adapters.db.engine import make_engine
    from parcelvault.crypto.keyring import key_folder_exists

    if not key_folder_exists(settings.key_dir):
        raise fail(f"no keys in {settings.key_dir}; run `parcelvault init` first", code)
    engine = make_engine(settings.database_url)
    try:
        current, head = migrate.current_revision(engine), migrate.SCHEMA_HEAD
    finally:
        engine.dispose()
    if current != head:
        raise fail("the database schema is not up to date; run `parcelvault migrate`", code)


def ready_vault(settings: Settings, code: int = 1) -> Vault:
    from parcelvault.crypto.keyring import KeyFolderError
    from parcelvault.services.vault import build

    require_ready(settings, code)
    try:
        return build(settings)
    except KeyFolderError as exc:
        raise fail(str(exc), code) from exc
