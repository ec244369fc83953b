"""The persistent transparency log: an RFC 6962 Merkle tree kept in the database.

Leaves
------
Each entry has a kind (`access`, `event`, `consent`, `erasure`, `key_rotation`,
`policy_change`), a body (canonical JSON: sorted keys, no spaces) and 16 random bytes of
salt. Its leaf is

    leaf data = b"parcelvault-ledger/v1\\n" || kind || b"\\n" || SHA-256(salt || body)
    leaf hash = SHA-256(0x00 || leaf data)                       (RFC 6962)

The body and the salt are stored beside the leaf but are not part of the tree. Erasing
an entry deletes its body and salt: the tree, every proof and every checkpoint still
verify, and nobody can tell any more what the leaf was about, because without the salt
the hash cannot be tested against guesses.

Sequencing
----------
Access records and scan events are not copied anywhere on the hot paths: one
sequencer reads the rows of their own tables that have no `ledger_index` yet,
together with the generic `ledger_queue`, gives them consecutive indexes, stores the
leaves and every complete subtree node, and marks each source row with its index,
all in one transaction.
Only one sequencer runs at a time: on PostgreSQL it holds a transaction-level advisory
lock, on SQLite it opens the transaction with BEGIN IMMEDIATE (the single writer).
Any number of API processes may write sources concurrently.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    select,
    update,
)

from parcelvault.adapters.db.store import AnyRow, bulk_insert
from parcelvault.adapters.db.tables import (
    access_records,
    events,
    ledger_checkpoints,
    ledger_entries,
    ledger_nodes,
    ledger_queue,
    shipments,
)
from parcelvault.ledger import merkle
from parcelvault.ledger.note import Signer, format_checkpoint, sign_note

KINDS = frozenset({"access", "event", "consent", "erasure", "key_rotation", "policy_change"})
LEAF_PREFIX = b"parcelvault-ledger/v1\n"
SALT_BYTES = 16
ADVISORY_LOCK_KEY = 0x70766C6564676572  # "pvledger"


def canonical(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def leaf_data(kind: str, salt: bytes, body: bytes) -> bytes:
    return LEAF_PREFIX + kind.encode() + b"\n" + hashlib.sha256(salt + body).digest()


def entry_leaf_hash(kind: str, salt: bytes, body: bytes) -> bytes:
    return merkle.leaf_hash(leaf_data(kind, salt, body))


def enqueue(
    connection: Connection,
    *,
    kind: str,
    body: dict[str, Any],
    subject_id: str | None,
    ref: str | None,
    now: datetime,
) -> None:
    """Queue an entry in the caller's transaction (for kinds without a source table)."""
    if kind not in KINDS:
        raise ValueError(f"unknown ledger entry kind {kind!r}")
    connection.execute(
        ledger_queue.insert().values(
            kind=kind,
            body=canonical(body),
            salt=os.urandom(SALT_BYTES),
            subject_id=subject_id,
            ref=ref,
            created_at=now,
        )
    )


def record_policy(engine: Engine, *, digest: str, now: datetime) -> bool:
    """Queue a `policy_change` entry if the policy in force (by the SHA-256 of its text)
    is not the one the log last recorded; returns whether it queued one."""
    with engine.begin() as connection:
        bodies = [
            *connection.execute(
                select(ledger_queue.c.body)
                .where(ledger_queue.c.kind == "policy_change")
                .order_by(ledger_queue.c.id.desc())
                .limit(1)
            ).scalars(),
            *connection.execute(
                select(ledger_entries.c.body)
                .where(ledger_entries.c.kind == "policy_change")
                .order_by(ledger_entries.c.idx.desc())
                .limit(1)
            ).scalars(),
        ]
        recorded = [orjson.loads(body).get("policy_sha256") for body in bodies if body]
        if recorded and recorded[0] == digest:
            return False
        enqueue(
            connection,
            kind="policy_change",
            body={"policy_sha256": digest},
            subject_id=None,
            ref=None,
            now=now,
        )
        return True


@dataclass(frozen=True)
class Pending:
    kind: str
    body: bytes
    salt: bytes
    subject_id: str | None
    ref: str | None
    created_at: datetime


# --- sources -------------------------------------------------------------------------


def _event_body(row: AnyRow) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "tenant": row.tenant_id,
        "shipment": row.shipment_id,
        "tracking_number": row.tracking_number,
        "time": row.occurred_at.isoformat(),
        "utc_offset_min": row.utc_offset_min,
        "status": row.status,
        "reason": row.reason,
        "description": row.description,
        "location": [row.loc_country, row.loc_region, row.loc_city, row.loc_facility],
        "proof_of_delivery": bool(row.has_proof),
    }


def _access_body(row: AnyRow) -> dict[str, Any]:
    return {
        "access_record": row.id,
        "at": row.at.isoformat(),
        "shipment": row.shipment_id,
        "subject": row.subject_id,
        "tier": row.tier,
        "actor": [row.actor_kind, row.actor_id],
        "fields": row.fields.split(","),
        "purpose": row.purpose,
        "reason": row.reason,
    }


@dataclass
class _Gathered:
    pending: list[Pending]
    queue_ids: list[int]
    access_ids: list[int]
    event_ids: list[int]


def _gather(connection: Connection, limit: int) -> _Gathered:
    """Up to `limit` unsequenced entries: the queue first, then access records, then
    events, each in the order of its integer key.

    Sources are read by what is not yet placed (queue rows still present, rows whose
    `ledger_index` is NULL), never by a high-water mark: on PostgreSQL, transactions
    commit in any order, so a row with a smaller key can appear after a larger one
    has been placed, and a mark would skip it.
    """
    gathered = _Gathered([], [], [], [])
    queue_rows = connection.execute(
        select(ledger_queue).order_by(ledger_queue.c.id).limit(limit)
    ).all()
    for row in queue_rows:
        gathered.pending.append(
            Pending(row.kind, row.body, row.salt, row.subject_id, row.ref, row.created_at)
        )
        gathered.queue_ids.append(row.id)
    access_rows = connection.execute(
        select(access_records)
        .where(access_records.c.ledger_index.is_(None))
        .order_by(access_records.c.id)
        .limit(limit - len(gathered.pending))
    ).all()
    for row in access_rows:
        body = canonical(_access_body(row))
        ref = f"access:{row.id}"
        salt = os.urandom(SALT_BYTES)
        gathered.pending.append(Pending("access", body, salt, row.subject_id, ref, row.at))
        gathered.access_ids.append(row.id)
    event_rows = connection.execute(
        select(events, shipments.c.tracking_number, shipments.c.subject_id)
        .join(shipments, shipments.c.id == events.c.shipment_id)
        .where(events.c.ledger_index.is_(None))
        .order_by(events.c.id)
        .limit(limit - len(gathered.pending))
    ).all()
    for row in event_rows:
        gathered.pending.append(
            Pending(
                "event",
                canonical(_event_body(row)),
                os.urandom(SALT_BYTES),
                row.subject_id,
                f"event:{row.tenant_id}:{row.event_id}",
                datetime.fromtimestamp(row.arrival / 1_000_000, UTC),
            )
        )
        gathered.event_ids.append(row.id)
    return gathered


# --- the tree ----------------------------------------------------------------------


def size(connection: Connection) -> int:
    value = connection.execute(select(func.max(ledger_entries.c.idx))).scalar()
    return int(value) + 1 if value is not None else 0


def fetch_nodes(connection: Connection, nodes: Sequence[merkle.Node]) -> dict[merkle.Node, bytes]:
    """The hashes of the given complete subtrees, in one query.

    The query is one `level = ? AND idx IN (...)` term per level, so both databases
    look each node up by the primary key (a row-value IN makes SQLite scan the whole
    table), and it is sent straight to the DBAPI cursor: a proof needs a few dozen
    nodes, and building a statement through SQLAlchemy would cost more than the
    lookup itself.
    """
    wanted = sorted(set(nodes))
    found: dict[merkle.Node, bytes] = {}
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    cursor = connection.connection.cursor()
    try:
        for start in range(0, len(wanted), 400):
            by_level: dict[int, list[int]] = {}
            for level, index in wanted[start : start + 400]:
                by_level.setdefault(level, []).append(index)
            terms, params = [], []
            for level, indexes in sorted(by_level.items()):
                terms.append(f"(level = {mark} AND idx IN ({', '.join([mark] * len(indexes))}))")
                params += [level, *indexes]
            # Only placeholders are interpolated; every value travels as a parameter.
            sql = "SELECT level, idx, hash FROM ledger_nodes WHERE " + " OR ".join(terms)  # noqa: S608
            cursor.execute(sql, tuple(params))
            rows = cursor.fetchall()
            found.update({(row[0], row[1]): bytes(row[2]) for row in rows})
    finally:
        cursor.close()
    missing = [node for node in wanted if node not in found]
    if missing:
        raise LedgerError(f"the log is missing tree nodes {missing[:3]}")
    return found


class LedgerError(Exception):
    pass


def root(connection: Connection, tree_size: int) -> bytes:
    nodes = fetch_nodes(connection, merkle.root_nodes(tree_size))
    return merkle.root_from_nodes(tree_size, lambda level, index: nodes[level, index])


def inclusion_proof(connection: Connection, index: int, tree_size: int) -> list[bytes]:
    nodes = fetch_nodes(connection, merkle.inclusion_proof_nodes(index, tree_size))
    return merkle.inclusion_proof(index, tree_size, lambda level, i: nodes[level, i])


def consistency_proof(connection: Connection, old_size: int, new_size: int) -> list[bytes]:
    nodes = fetch_nodes(connection, merkle.consistency_proof_nodes(old_size, new_size))
    return merkle.consistency_proof(old_size, new_size, lambda level, i: nodes[level, i])


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """A write transaction that only one sequencer at a time can hold."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def sequence(engine: Engine, *, now: datetime, limit: int = 50_000) -> int:
    """Append up to `limit` waiting entries to the log; returns how many."""
    with _exclusive(engine) as connection:
        gathered = _gather(connection, max(1, limit))
        pending = gathered.pending
        if not pending:
            return 0
        start = size(connection)
        known = fetch_nodes(connection, merkle.root_nodes(start))
        entry_rows: list[dict[str, Any]] = []
        node_rows: list[dict[str, Any]] = []
        for offset, item in enumerate(pending):
            index = start + offset
            leaf = entry_leaf_hash(item.kind, item.salt, item.body)
            for (level, node_index), value in merkle.hashes_created_by_append(
                index, leaf, lambda level, i: known[level, i]
            ):
                known[level, node_index] = value
                node_rows.append({"level": level, "idx": node_index, "hash": value})
            entry_rows.append(
                {
                    "idx": index,
                    "kind": item.kind,
                    "leaf_hash": leaf,
                    "body": item.body,
                    "salt": item.salt,
                    "subject_id": item.subject_id,
                    "ref": item.ref,
                    "created_at": item.created_at,
                    "sequenced_at": now,
                    "erased_at": None,
                }
            )
        bulk_insert(connection, ledger_entries, entry_rows, skip_duplicates=False)
        bulk_insert(connection, ledger_nodes, node_rows, skip_duplicates=False)
        if gathered.queue_ids:
            connection.execute(
                delete(ledger_queue).where(ledger_queue.c.id.in_(gathered.queue_ids))
            )
        first_access = start + len(gathered.queue_ids)
        first_event = first_access + len(gathered.access_ids)
        _place(connection, access_records, gathered.access_ids, first_access)
        _place(connection, events, gathered.event_ids, first_event)
        return len(entry_rows)


def _place(connection: Connection, table: Table, row_ids: list[int], first_index: int) -> None:
    """Record in each source row the index its entry got, in the same transaction."""
    if row_ids:
        statement = (
            update(table)
            .where(table.c.id == bindparam("rid"))
            .values(ledger_index=bindparam("idx"))
        )
        connection.execute(
            statement,
            [{"rid": rid, "idx": first_index + n} for n, rid in enumerate(row_ids)],
        )


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


def checkpoint(engine: Engine, *, signer: Signer, now: datetime) -> SignedCheckpoint:
    """Sign and store a checkpoint of the current tree, unless the latest one already
    covers it; returns the latest checkpoint either way."""
    with _exclusive(engine) as connection:
        latest = latest_checkpoint(connection)
        tree_size = size(connection)
        if latest is not None and latest.size == tree_size:
            return latest
        tree_root = root(connection, tree_size)
        note = sign_note(format_checkpoint(signer.name, tree_size, tree_root), signer)
        connection.execute(
            ledger_checkpoints.insert().values(
                size=tree_size, root=tree_root, note=note, created_at=now
            )
        )
        return SignedCheckpoint(tree_size, tree_root, note)


def latest_checkpoint(connection: Connection) -> SignedCheckpoint | None:
    row = connection.execute(
        select(ledger_checkpoints).order_by(ledger_checkpoints.c.size.desc()).limit(1)
    ).first()
    return SignedCheckpoint(row.size, row.root, row.note) if row else None
