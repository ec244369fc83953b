"""Write transactions that read what they are about to change."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import Connection

from parcelvault.adapters.db.engine import immediate_transaction
from parcelvault.services.vault import Vault


def read_then_write(vault: Vault) -> AbstractContextManager[Connection]:
    """A transaction in which a check (is the parcel still on its way? has this
    consent already been given?) and the write that depends on it cannot be split by
    another writer. On SQLite the transaction takes the database's write lock before
    its first read (BEGIN IMMEDIATE), inside this process's write turn; on PostgreSQL
    the caller locks the rows it reads with SELECT ... FOR UPDATE."""
    return immediate_transaction(vault.engine, vault.writing())
