"""The key store: every data subject's wrapped data key, kept apart from the database.

Why apart: crypto-shredding only reaches backups if the keys are not in them. The
database (and every backup of it) holds ciphertexts and, per subject, only the random
`key_id` of its data key; the key store holds the wrapped keys. Erasing a subject
deletes its row here and records the `key_id` in `destroyed_keys`, so:

- restoring an old *database* backup brings back ciphertexts whose key no longer
  exists anywhere, and `keys reconcile` finds them by `key_id` and finishes the
  erasure in the database again;
- restoring an old *key store* backup brings back a key that the database's erasure
  receipts name, and `keys reconcile` destroys it again.

By default the key store is a SQLite file in the key folder (`subject-keys.db`); with
several application hosts it is a database of its own (`PARCELVAULT_KEYSTORE_URL`),
backed up on its own schedule. Its schema is created on first use.

A key row: ``subject_id`` (the keyed hash the database uses), ``key_id`` (16 random
bytes, hex), ``kek_id`` (which key-encryption key wrapped it, always the one the
wrapped bytes name) and ``wrapped``. ``kek_history`` records when each key-encryption
key was first put to use and when `keys retire` deleted it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)

from parcelvault.adapters.db.engine import make_engine
from parcelvault.adapters.db.store import bulk_insert_tuples, chunks
from parcelvault.adapters.db.tables import UtcDateTime
from parcelvault.crypto.randomness import RandomBytes

KEYSTORE_FILE = "subject-keys.db"

keystore_metadata = MetaData()

data_keys = Table(
    "data_keys",
    keystore_metadata,
    Column("subject_id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False, unique=True),
    Column("kek_id", Integer, nullable=False, index=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

destroyed_keys = Table(
    "destroyed_keys",
    keystore_metadata,
    Column("key_id", String(32), primary_key=True),
    Column("destroyed_at", UtcDateTime(), nullable=False),
)

kek_history = Table(
    "kek_history",
    keystore_metadata,
    Column("kek_id", Integer, primary_key=True, autoincrement=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("retired_at", UtcDateTime(), nullable=True),
)


def default_url(key_dir: Path) -> str:
    return f"sqlite:///{(key_dir / KEYSTORE_FILE).resolve()}"


def new_key_id(random_bytes: RandomBytes = os.urandom) -> str:
    return random_bytes(16).hex()


@dataclass(frozen=True)
class StoredKey:
    subject_id: str
    key_id: str
    kek_id: int
    wrapped: bytes


START = "start"
RewrapCursor = str | int
"""Where `batch_to_rewrap` goes on from: `START`, or the `after` of the last batch."""


@dataclass(frozen=True)
class RewrapBatch:
    """Keys to re-wrap, as columns (the rotation's hot loop builds no object per key)."""

    subject_ids: list[str]
    key_ids: list[str]
    wrapped: list[bytes]
    rowids: list[int] | None
    """SQLite row ids, to update the rows by."""
    after: RewrapCursor

    def __len__(self) -> int:
        return len(self.subject_ids)


_KEY_COLUMNS = ("subject_id", "key_id", "kek_id", "wrapped", "created_at")


def kek_of(wrapped: bytes) -> int:
    """The key-encryption key id a wrapped key names in its header (see `keyring`)."""
    if wrapped[:1] == b"\x02" and len(wrapped) > 3:
        return int.from_bytes(wrapped[1:3], "big")
    return 1


def _keys_of(connection: Connection, subject_ids: Iterable[str]) -> dict[str, StoredKey]:
    """The stored keys of these subjects, read straight through the driver: an import
    reads hundreds of keys per chunk, and SQLAlchemy's row processing cost more than
    the indexed lookups."""
    wanted = sorted(set(subject_ids))
    found: dict[str, StoredKey] = {}
    if not wanted:
        return found
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    # Only names and placeholders are interpolated; every value travels as a parameter.
    head = "SELECT subject_id, key_id, kek_id, wrapped FROM data_keys WHERE subject_id IN ("
    cursor = connection.connection.cursor()
    try:
        for chunk in chunks(wanted):
            cursor.execute(head + ", ".join([mark] * len(chunk)) + ")", tuple(chunk))
            for subject_id, key_id, kek_id, wrapped in cursor.fetchall():
                found[subject_id] = StoredKey(subject_id, key_id, kek_id, bytes(wrapped))
    finally:
        cursor.close()
    return found


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        keystore_metadata.create_all(engine, checkfirst=True)

    @classmethod
    def open(cls, url: str) -> KeyStore:
        engine = make_engine(url)
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        if path and path != ":memory:" and not Path(path).exists():
            # Created private before SQLite opens it: its -wal and -shm files take
            # the same mode.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return cls(engine)

    def get(self, subject_ids: Iterable[str]) -> dict[str, StoredKey]:
        with self.engine.connect() as connection:
            return _keys_of(connection, subject_ids)

    def get_one(self, subject_id: str) -> StoredKey | None:
        return self.get([subject_id]).get(subject_id)

    def add(self, keys: Sequence[StoredKey], *, now: datetime) -> dict[str, StoredKey]:
        """Store new keys; where another process stored a key for the same subject
        first, theirs is kept and returned instead, so every writer seals with the
        same key. One transaction: the insert (skipping subjects that have a key) and,
        unless the driver counts every key as inserted, the reading back of every
        subject's key."""
        if not keys:
            return {}
        named = [
            k
            if k.kek_id == kek_of(k.wrapped)
            else StoredKey(k.subject_id, k.key_id, kek_of(k.wrapped), k.wrapped)
            for k in keys
        ]
        rows = [(k.subject_id, k.key_id, k.kek_id, k.wrapped, now) for k in named]
        with self.engine.begin() as connection:
            inserted = bulk_insert_tuples(
                connection, data_keys, _KEY_COLUMNS, rows, skip_duplicates=True
            )
            if inserted == len({k.subject_id for k in keys}) == len(keys):
                # Every one of them went in: they are what the key store holds.
                return {k.subject_id: k for k in named}
            return _keys_of(connection, (k.subject_id for k in keys))

    def destroy(self, subject_id: str, *, now: datetime) -> StoredKey | None:
        """Delete a subject's key and remember its id as destroyed; the key that was
        destroyed, or None if the subject had none."""
        with self.engine.begin() as connection:
            row = connection.execute(
                select(data_keys).where(data_keys.c.subject_id == subject_id)
            ).first()
            if row is None:
                return None
            connection.execute(delete(data_keys).where(data_keys.c.subject_id == subject_id))
            connection.execute(insert(destroyed_keys).values(key_id=row.key_id, destroyed_at=now))
        return StoredKey(row.subject_id, row.key_id, row.kek_id, row.wrapped)

    def destroy_key_ids(self, key_ids: Iterable[str], *, now: datetime) -> int:
        """Destroy keys by id (keys an old key-store backup brought back); returns how
        many were still present."""
        wanted = sorted(set(key_ids))
        removed = 0
        with self.engine.begin() as connection:
            known = set(connection.execute(select(destroyed_keys.c.key_id)).scalars())
            for chunk in chunks(wanted):
                result = connection.execute(delete(data_keys).where(data_keys.c.key_id.in_(chunk)))
                removed += result.rowcount
            fresh = [{"key_id": k, "destroyed_at": now} for k in wanted if k not in known]
            if fresh:
                connection.execute(insert(destroyed_keys), fresh)
        return removed

    def destroyed_ids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.execute(select(destroyed_keys.c.key_id)).scalars())

    def count_by_kek(self) -> dict[int, int]:
        with self.engine.connect() as connection:
            query = select(data_keys.c.kek_id, func.count()).group_by(data_keys.c.kek_id)
            return {int(kek): int(n) for kek, n in connection.execute(query)}

    def oldest_key_created(self) -> datetime | None:
        with self.engine.connect() as connection:
            value: datetime | None = connection.execute(
                select(func.min(data_keys.c.created_at))
            ).scalar()
            return value

    def batch_wrapped_by(self, kek_id: int, *, after: str, limit: int) -> list[StoredKey]:
        """Keys wrapped by `kek_id`, in subject order after `after` (for re-wrapping)."""
        with self.engine.connect() as connection:
            query = (
                select(data_keys)
                .where(data_keys.c.kek_id == kek_id, data_keys.c.subject_id > after)
                .order_by(data_keys.c.subject_id)
                .limit(limit)
            )
            return [
                StoredKey(r.subject_id, r.key_id, r.kek_id, r.wrapped)
                for r in connection.execute(query)
            ]

    def batch_to_rewrap(self, kek_id: int, *, after: RewrapCursor, limit: int) -> RewrapBatch:
        """Up to `limit` keys wrapped by any key-encryption key but `kek_id`, after the
        cursor (`START` for the first batch). Read through the driver: rotation reads
        every key once. On SQLite the walk goes in row id order, so reads and the
        updates that follow touch the table's pages in sequence; PostgreSQL goes in
        subject order."""
        sqlite = self.engine.dialect.name == "sqlite"
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        position = "rowid" if sqlite else "subject_id"
        # Only names and placeholders are interpolated; every value travels as a parameter.
        sql = (
            f"SELECT {position}, subject_id, key_id, wrapped FROM data_keys "  # noqa: S608
            f"WHERE {position} > {mark} AND kek_id <> {mark} ORDER BY {position} LIMIT {mark}"
        )
        if after == START:
            after = -1 if sqlite else ""
        with self.engine.connect() as connection:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql, (after, kek_id, limit))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        return RewrapBatch(
            subject_ids=[r[1] for r in rows],
            key_ids=[r[2] for r in rows],
            wrapped=[bytes(r[3]) for r in rows],
            rowids=[r[0] for r in rows] if sqlite else None,
            after=rows[-1][0] if rows else after,
        )

    def replace_wrapped(self, keys: Sequence[StoredKey]) -> int:
        """Store re-wrapped keys in one transaction; a row is only changed if it still has
        its old key id (a key destroyed meanwhile stays destroyed). Returns how many
        rows changed."""
        return self._update_wrapped(
            [(kek_of(k.wrapped), k.wrapped, k.subject_id, k.key_id) for k in keys],
            by_rowid=False,
        )

    def store_rewrapped(self, batch: RewrapBatch, wrapped: Sequence[bytes], kek_id: int) -> int:
        """`replace_wrapped` for a batch from `batch_to_rewrap`, whose keys `wrapped` now
        holds wrapped by `kek_id`, in the same order."""
        if len(wrapped) != len(batch):
            raise ValueError("one wrapped key per key of the batch")
        kek_ids = [kek_id] * len(batch)
        if batch.rowids is not None:
            return self._update_wrapped(
                list(zip(kek_ids, wrapped, batch.rowids, batch.key_ids, strict=True)),
                by_rowid=True,
            )
        return self._update_wrapped(
            list(zip(kek_ids, wrapped, batch.subject_ids, batch.key_ids, strict=True)),
            by_rowid=False,
        )

    def _update_wrapped(self, params: list[tuple[int, bytes, Any, str]], *, by_rowid: bool) -> int:
        if not params:
            return 0
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        row = "rowid" if by_rowid else "subject_id"
        # Only names and placeholders are interpolated; every value travels as a parameter.
        sql = (
            f"UPDATE data_keys SET kek_id = {mark}, wrapped = {mark} "  # noqa: S608
            f"WHERE {row} = {mark} AND key_id = {mark}"
        )
        with self.engine.begin() as connection:
            cursor = connection.connection.cursor()
            try:
                cursor.executemany(sql, params)
                changed = cursor.rowcount
            finally:
                cursor.close()
        return int(changed) if changed is not None and changed >= 0 else len(params)

    def count_not_wrapped_by(self, kek_id: int) -> int:
        with self.engine.connect() as connection:
            query = select(func.count()).where(data_keys.c.kek_id != kek_id)
            return int(connection.execute(query).scalar() or 0)

    def count_destroyed(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(destroyed_keys)).scalar() or 0
            )

    def kek_history(self) -> dict[int, tuple[datetime, datetime | None]]:
        """kek id -> (first put to use, retired or None)."""
        with self.engine.connect() as connection:
            return {
                int(r.kek_id): (r.created_at, r.retired_at)
                for r in connection.execute(select(kek_history))
            }

    def record_kek(self, kek_id: int, *, now: datetime) -> None:
        """Remember when a key-encryption key was put to use (once; later calls keep
        the first time)."""
        with self.engine.begin() as connection:
            known = connection.execute(
                select(kek_history.c.kek_id).where(kek_history.c.kek_id == kek_id)
            ).first()
            if known is None:
                connection.execute(insert(kek_history).values(kek_id=kek_id, created_at=now))

    def record_kek_retired(self, kek_id: int, *, now: datetime) -> None:
        with self.engine.begin() as connection:
            known = connection.execute(
                select(kek_history.c.kek_id).where(kek_history.c.kek_id == kek_id)
            ).first()
            if known is None:
                connection.execute(
                    insert(kek_history).values(kek_id=kek_id, created_at=now, retired_at=now)
                )
            else:
                connection.execute(
                    update(kek_history).where(kek_history.c.kek_id == kek_id).values(retired_at=now)
                )
