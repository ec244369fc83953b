"""Write transactions that read what they are about to change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from parcelvault.services.vault import Vault


@contextmanager
def read_then_write(vault: Vault) -> Iterator[Connection]:
    """A transaction in which a check (is the parcel still on its way? has this
    consent already been given?) and the write that depends on it cannot be split by
    another writer. On SQLite the transaction takes the database's write lock before
    its first read (BEGIN IMMEDIATE), inside this process's write turn; on PostgreSQL
    the caller locks the rows it reads with SELECT ... FOR UPDATE."""
    with vault.writing(), vault.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
