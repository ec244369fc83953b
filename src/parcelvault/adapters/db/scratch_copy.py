"""A throwaway copy of a SQLite database, for work that must see its own writes but
must neither keep them nor hold up the live database (an import's dry run).

SQLite has one writer at a time: a dry run that wrote into the live database inside
one transaction it rolls back would hold the write lock for its whole run, and a
running service's writes would wait and then fail. Instead, the run writes into a
copy taken with SQLite's online backup (one consistent snapshot, read like any other
reader: in WAL mode writers go on meanwhile). The copy lives in a private directory
(mode 0700) beside the database, so it is on a disk with room for the database, and
is deleted when the work ends. It holds what the database holds: sealed values,
never a key. If the process is killed, a `.parcelvault-scratch-*` directory is left
behind beside the database; delete it.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from parcelvault.adapters.db.engine import make_engine
from parcelvault.domain.errors import DomainError

SCRATCH_PREFIX = ".parcelvault-scratch-"


def database_file(engine: Engine) -> Path | None:
    """The file of a SQLite database; None for PostgreSQL or an in-memory database."""
    if engine.dialect.name != "sqlite":
        return None
    name = engine.url.database
    if not name or name == ":memory:" or engine.url.query.get("mode") == "memory":
        return None
    return Path(name)


class ScratchCopyFailed(DomainError):
    """The copy could not be made (no room, no permission); the message says where."""


@contextmanager
def scratch_copy(engine: Engine) -> Iterator[Engine]:
    """An engine on a fresh copy of `engine`'s SQLite database file (see the module
    docstring), removed afterwards. Nothing written through it is kept."""
    source_file = database_file(engine)
    if source_file is None:
        raise ValueError("only a SQLite database file can be copied")
    beside = source_file.resolve().parent
    try:
        folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=beside))
    except OSError as exc:
        raise ScratchCopyFailed(_failure(beside, exc.strerror or type(exc).__name__)) from exc
    try:
        copy_file = folder / "copy.db"
        source = engine.raw_connection()
        try:
            with closing(sqlite3.connect(copy_file)) as target:
                source.driver_connection.backup(target)  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            raise ScratchCopyFailed(_failure(beside, str(exc))) from exc
        finally:
            source.close()
        copy = make_engine(f"sqlite:///{copy_file}")
        event.listen(copy, "connect", _throwaway)
        try:
            yield copy
        finally:
            copy.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _failure(beside: Path, reason: str) -> str:
    return (
        f"cannot make a scratch copy of the database in {beside} ({reason}); "
        "it needs free space of about the database's size there"
    )


def _throwaway(dbapi_connection: Any, _record: Any) -> None:
    """Nothing of a scratch copy needs to survive a crash: no syncing to disk."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()
