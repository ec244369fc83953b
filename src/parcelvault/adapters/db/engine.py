from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


DEFERRED_WAL_CHECKPOINT_PAGES = 16_384
"""SQLite's write-ahead log size (pages of 4 KiB: 64 MiB) past which the connections of
an engine made with `checkpoints_elsewhere` checkpoint it themselves. Below it they
leave the work to the jobs process (`background.WalCheckpointer`), instead of copying
the log back into the database inside a request at every 1,000 pages (SQLite's
default), which a batch of 1,000 events reaches on its own."""


BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite statement waits for another process's write lock."""


def make_engine(url: str, *, checkpoints_elsewhere: bool = False, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, hide_parameters=True, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if checkpoints_elsewhere:
            event.listen(engine, "connect", _deferred_wal_checkpoints)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, hide_parameters=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _deferred_wal_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={DEFERRED_WAL_CHECKPOINT_PAGES}")
    cursor.close()


@contextmanager
def immediate_transaction(
    engine: Engine, turn: AbstractContextManager[object]
) -> Iterator[Connection]:
    """A transaction that holds the write lock from its first statement: inside `turn`
    (the process's write turn), and on SQLite opened with BEGIN IMMEDIATE, so what it
    reads cannot change before it writes. On PostgreSQL the caller locks the rows it
    reads (SELECT ... FOR UPDATE / FOR SHARE). Commits unless the block raises."""
    with turn, engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        with committed(connection):
            yield connection


@contextmanager
def committed(connection: Connection) -> Iterator[Connection]:
    """Commit the connection's transaction when the block ends, roll it back if the
    block raises."""
    try:
        yield connection
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


@contextmanager
def without_waiting(connection: Connection) -> Iterator[Connection]:
    """For the block's duration, a SQLite statement on `connection` that meets another
    process's write lock fails at once ("database is locked") instead of waiting up to
    `BUSY_TIMEOUT_MS`."""
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        yield connection
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
