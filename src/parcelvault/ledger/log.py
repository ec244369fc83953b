"""The persistent transparency log: an RFC 6962 Merkle tree kept in the database.

Leaves
------
Each entry has a kind (`access`, `event`, `consent`, `correction`, `erasure`,
`key_rotation`, `policy_change`), a body (canonical JSON: sorted keys, no spaces) and 16
random bytes of salt. Its leaf is

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
leaves and every complete interior node, and marks each source row with its index,
all in one transaction.

Only one sequencer runs at a time: on PostgreSQL it holds a transaction-level advisory
lock, on SQLite it opens the transaction with BEGIN IMMEDIATE (the single writer).
Any number of API processes may write sources concurrently. The sequencer gathers and
hashes a batch before it takes the lock (`plan`) and stores it under the lock
(`append`) only if the tree has not grown and no erasure was cleaned up in between;
otherwise it gathers again under the lock.

Storage
-------
`ledger_entries` keeps the leaves (its `leaf_hash` is the tree's level-0 node) and
`ledger_nodes` every complete subtree above them, (level, index) with level >= 1: about
one node row per entry. A batch is hashed level by level in one pass
(`merkle.interior_hashes_created_by_appends`) and its rows go to the DBAPI cursor as
tuples with one executemany per table; source rows are marked and queue rows deleted
by runs of consecutive ids, one statement per run.

`ledger_entries` has no secondary index (each would cost a random insert per entry):
an entry is found from the row it records (`events`, `access_records` and `consents`
carry `ledger_index`), or, for the few queued kinds looked up by name, through
`ledger_refs`. Erasure finds a subject's entries the same way; entries about a subject
erased while they waited are placed without body and salt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Integer, bindparam, func, select, update

from parcelvault.adapters.db.engine import committed
from parcelvault.adapters.db.store import chunks, driver_rows, sqlite_datetime
from parcelvault.adapters.db.tables import (
    access_records,
    events,
    ledger_checkpoints,
    ledger_counters,
    ledger_entries,
    ledger_queue,
    ledger_refs,
    shipments,
)
from parcelvault.ledger import merkle
from parcelvault.ledger.note import Signer, format_checkpoint, sign_note

KINDS = frozenset(
    {
        "access",
        "event",
        "consent",
        "correction",
        "erasure",
        "key_rotation",
        "policy_change",
    }
)
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
    """Queue an entry in the caller's transaction (for kinds without a source table),
    with its leaf hash, so that the sequencer places it without reading its body."""
    if kind not in KINDS:
        raise ValueError(f"unknown ledger entry kind {kind!r}")
    text, salt = canonical(body), os.urandom(SALT_BYTES)
    connection.execute(
        ledger_queue.insert().values(
            kind=kind,
            body=text,
            salt=salt,
            leaf_hash=entry_leaf_hash(kind, salt, text),
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


Pending = tuple[str, bytes, bytes, str | None, str | None, Any]
"""(kind, body, salt, subject_id, ref, created_at): created_at as the driver reads and
writes it for a UTC timestamp column (text on SQLite, a datetime on PostgreSQL)."""


# --- sources -------------------------------------------------------------------------


def _utc(value: Any) -> datetime:
    """A `UtcDateTime` value as the driver returns it (text on SQLite, a datetime on
    PostgreSQL), as the aware UTC datetime SQLAlchemy would have returned."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


_UNPLACED_EVENTS = (
    select(
        events.c.id,
        events.c.event_id,
        events.c.tenant_id,
        events.c.shipment_id,
        shipments.c.tracking_number,
        events.c.occurred_at,
        events.c.utc_offset_min,
        events.c.status,
        events.c.reason,
        events.c.description,
        events.c.loc_country,
        events.c.loc_region,
        events.c.loc_city,
        events.c.loc_facility,
        events.c.has_proof,
        events.c.arrival,
        shipments.c.subject_id,
    )
    .join(shipments, shipments.c.id == events.c.shipment_id)
    .where(events.c.ledger_index.is_(None))
    .order_by(events.c.id)
    .limit(bindparam("limit", type_=Integer))
)

_UNPLACED_ACCESS = (
    select(
        access_records.c.id,
        access_records.c.at,
        access_records.c.shipment_id,
        access_records.c.subject_id,
        access_records.c.tier,
        access_records.c.actor_kind,
        access_records.c.actor_id,
        access_records.c.fields,
        access_records.c.purpose,
        access_records.c.reason,
    )
    .where(access_records.c.ledger_index.is_(None))
    .order_by(access_records.c.id)
    .limit(bindparam("limit", type_=Integer))
)


def iso_utc(value: Any) -> str:
    """`_utc(value).isoformat()`, without parsing the text SQLite keeps for a
    `UtcDateTime` ("YYYY-MM-DD HH:MM:SS.ffffff", always with microseconds)."""
    if isinstance(value, str) and len(value) == 26 and value[10] == " " and value[19] == ".":
        fraction = "" if value[20:] == "000000" else value[19:]
        return f"{value[:10]}T{value[11:19]}{fraction}+00:00"
    return _utc(value).isoformat()


def _event_entries(rows: Sequence[Any], stamp: Callable[[datetime], Any]) -> list[Pending]:
    """Entries for rows of `_UNPLACED_EVENTS` (driver tuples, in its column order). The
    body's keys are written in sorted order, so it is `canonical` without sorting."""
    salts = os.urandom(SALT_BYTES * len(rows))
    dumps = orjson.dumps
    return [
        (
            "event",
            dumps(
                {
                    "description": description,
                    "event_id": event_id,
                    "location": [country, region, city, facility],
                    "proof_of_delivery": bool(proof),
                    "reason": reason,
                    "shipment": shipment,
                    "status": status,
                    "tenant": tenant,
                    "time": iso_utc(occurred),
                    "tracking_number": number,
                    "utc_offset_min": offset,
                }
            ),
            salts[n * SALT_BYTES : (n + 1) * SALT_BYTES],
            subject,
            None,
            stamp(datetime.fromtimestamp(arrival / 1_000_000, UTC)),
        )
        for n, (
            _,
            event_id,
            tenant,
            shipment,
            number,
            occurred,
            offset,
            status,
            reason,
            description,
            country,
            region,
            city,
            facility,
            proof,
            arrival,
            subject,
        ) in enumerate(rows)
    ]


def _access_entries(rows: Sequence[Any], stamp: Callable[[datetime], Any]) -> list[Pending]:
    """Entries for rows of `_UNPLACED_ACCESS` (driver tuples, in its column order)."""
    salts = os.urandom(SALT_BYTES * len(rows))
    entries: list[Pending] = []
    for n, (
        rid,
        at,
        shipment,
        subject,
        tier,
        actor_kind,
        actor_id,
        fields,
        purpose,
        reason,
    ) in enumerate(rows):
        when = _utc(at)
        body = {
            "access_record": rid,
            "at": when.isoformat(),
            "shipment": shipment,
            "subject": subject,
            "tier": tier,
            "actor": [actor_kind, actor_id],
            "fields": fields.split(","),
            "purpose": purpose,
            "reason": reason,
        }
        salt = salts[n * SALT_BYTES : (n + 1) * SALT_BYTES]
        entries.append(("access", canonical(body), salt, subject, None, stamp(when)))
    return entries


@dataclass
class _Gathered:
    queue_ids: list[int]
    queue_leaves: list[bytes]
    queue_refs: list[str | None]
    missing_leaves: list[tuple[bytes, int]]  # (leaf hash, queue id) computed here
    pending: list[Pending]  # access records, then events
    access_ids: list[int]
    event_ids: list[int]

    def __len__(self) -> int:
        return len(self.queue_ids) + len(self.pending)


def _stamper(connection: Connection) -> Callable[[datetime], Any]:
    """Turns a UTC timestamp into what the driver stores in a `UtcDateTime` column."""
    return sqlite_datetime if connection.dialect.name == "sqlite" else _utc


def _gather(connection: Connection, limit: int) -> _Gathered:
    """Up to `limit` unsequenced entries: the queue first, then access records, then
    events, each in the order of its integer key.

    Sources are read by what is not yet placed (queue rows still present, rows whose
    `ledger_index` is NULL), never by a high-water mark: on PostgreSQL, transactions
    commit in any order, so a row with a smaller key can appear after a larger one
    has been placed, and a mark would skip it.
    """
    gathered = _Gathered([], [], [], [], [], [], [])
    queue_rows = _driver_select(
        connection, "SELECT id, leaf_hash, ref FROM ledger_queue ORDER BY id LIMIT {}", (limit,)
    )
    gathered.queue_ids = [row[0] for row in queue_rows]
    gathered.queue_leaves = [row[1] for row in queue_rows]
    gathered.queue_refs = [row[2] for row in queue_rows]
    if None in gathered.queue_leaves:
        _complete_leaves(connection, gathered)
    stamp = _stamper(connection)
    if len(gathered) < limit:
        access_rows = driver_rows(connection, _UNPLACED_ACCESS, {"limit": limit - len(gathered)})
        gathered.pending += _access_entries(access_rows, stamp)
        gathered.access_ids = [row[0] for row in access_rows]
    if len(gathered) < limit:
        event_rows = driver_rows(connection, _UNPLACED_EVENTS, {"limit": limit - len(gathered)})
        gathered.pending += _event_entries(event_rows, stamp)
        gathered.event_ids = [row[0] for row in event_rows]
    return gathered


def _complete_leaves(connection: Connection, gathered: _Gathered) -> None:
    """Leaf hashes of queue rows written without one (by a process older than the
    column), from their kind, salt and body."""
    pairs = list(zip(gathered.queue_ids, gathered.queue_leaves, strict=True))
    missing = [queue_id for queue_id, leaf in pairs if leaf is None]
    found: dict[int, bytes] = {}
    for chunk in chunks(missing):
        rows = connection.execute(
            select(
                ledger_queue.c.id, ledger_queue.c.kind, ledger_queue.c.salt, ledger_queue.c.body
            ).where(ledger_queue.c.id.in_(chunk))
        ).all()
        if {row.id for row in rows} != set(chunk):
            raise LedgerError("queued entries vanished while the sequencer held the log")
        for row in rows:
            if row.kind not in KINDS:
                raise LedgerError(f"unknown ledger entry kind {row.kind!r}")
            found[row.id] = entry_leaf_hash(row.kind, bytes(row.salt), bytes(row.body))
    gathered.missing_leaves = [(found[i], i) for i in missing]
    gathered.queue_leaves = [bytes(leaf) if leaf is not None else found[i] for i, leaf in pairs]


def _driver_select(connection: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Run `sql` (with `{}` standing for each placeholder) on the DBAPI cursor."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql.replace("{}", mark), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


# --- the tree ----------------------------------------------------------------------


def size(connection: Connection) -> int:
    value = connection.execute(select(func.max(ledger_entries.c.idx))).scalar()
    return int(value) + 1 if value is not None else 0


def fetch_nodes(connection: Connection, nodes: Sequence[merkle.Node]) -> dict[merkle.Node, bytes]:
    """The hashes of the given complete subtrees, in one query.

    Level 0 (the leaves) is read from `ledger_entries.leaf_hash` by index, the levels
    above from `ledger_nodes`, with one `level = ? AND idx IN (...)` term per level, so
    both databases look each node up by a primary key (a row-value IN makes SQLite scan
    the whole table). The query goes straight to the DBAPI cursor: a proof needs a few
    dozen nodes, and building a statement through SQLAlchemy would cost more than the
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
            selects, params = [], []
            leaves = by_level.pop(0, None)
            if leaves:
                selects.append(
                    "SELECT 0, idx, leaf_hash FROM ledger_entries "  # noqa: S608
                    f"WHERE idx IN ({', '.join([mark] * len(leaves))})"
                )
                params += leaves
            terms = []
            for level, indexes in sorted(by_level.items()):
                terms.append(f"(level = {mark} AND idx IN ({', '.join([mark] * len(indexes))}))")
                params += [level, *indexes]
            if terms:
                selects.append(
                    "SELECT level, idx, hash FROM ledger_nodes WHERE "  # noqa: S608
                    + " OR ".join(terms)
                )
            # Only placeholders are interpolated; every value travels as a parameter.
            cursor.execute(" UNION ALL ".join(selects), tuple(params))
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
def exclusive(engine: Engine, *, cache_kib: int | None = None) -> Iterator[Connection]:
    """A write transaction that only one sequencer at a time can hold, and that keeps
    the sequencer out while it is held; on SQLite with a page cache of up to
    `cache_kib` KiB for its duration, if given."""
    with engine.connect() as connection:
        previous_cache = None
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        else:
            if cache_kib is not None:
                previous_cache = connection.exec_driver_sql("PRAGMA cache_size").scalar()
                connection.exec_driver_sql(f"PRAGMA cache_size = -{int(cache_kib)}")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            with committed(connection):
                yield connection
        finally:
            if previous_cache is not None:
                connection.exec_driver_sql(f"PRAGMA cache_size = {int(previous_cache)}")


_LEAF_PREFIXES = {kind: b"\x00" + LEAF_PREFIX + kind.encode() + b"\n" for kind in KINDS}


def _leaf_hashes(pending: Sequence[Pending]) -> list[bytes]:
    """`entry_leaf_hash` of every pending entry, without a call per entry."""
    sha256 = hashlib.sha256
    prefixes = _LEAF_PREFIXES
    try:
        return [
            sha256(prefixes[kind] + sha256(salt + body).digest()).digest()
            for kind, body, salt, _, _, _ in pending
        ]
    except KeyError as error:
        raise LedgerError(f"unknown ledger entry kind {error.args[0]!r}") from None


SQLITE_CACHE_KIB = 128 * 1024
"""SQLite page cache of the sequencer's transaction, at most (allocated as pages are
read), so that a batch's dirty pages stay in memory until the commit instead of being
spilled to the WAL and read back. Restored when the batch is done."""


def sequence(
    engine: Engine,
    *,
    now: datetime,
    limit: int = 50_000,
    turn: AbstractContextManager[object] | None = None,
) -> int:
    """Append up to `limit` waiting entries to the log; returns how many. `turn` is
    held with the write lock: the caller's own turn-taking between its threads
    (`Vault.writing`)."""
    return append(engine, plan(engine, limit=limit), now=now, turn=turn)


@dataclass(frozen=True)
class Plan:
    """Entries to append to a tree of `start` entries, gathered with their leaves and
    the interior nodes the append creates, and the number of erasures cleaned up when
    they were gathered."""

    start: int
    erasures_cleaned: int
    gathered: _Gathered
    leaves: list[bytes]
    interior: list[tuple[merkle.Node, bytes]]
    limit: int

    def current(self, connection: Connection) -> bool:
        return (
            size(connection) == self.start
            and _erasures_cleaned(connection) == self.erasures_cleaned
        )


def plan(engine: Engine, *, limit: int = 50_000) -> Plan | None:
    """The next append of up to `limit` waiting entries, gathered and hashed without
    the write lock, so that writers of events and access records wait only while
    `append` stores the rows; None if nothing waits.

    The reads need not share a snapshot: the erasure count and the tree size are read
    first, so a clean-up or another append that happens before any later read has
    changed one of them by the time `append` holds the lock, and the plan is made
    again there."""
    limit = max(1, limit)
    with engine.connect() as connection:
        try:
            if not connection.exec_driver_sql(_WAITING).scalar():
                return None  # idle: one read through the partial indexes of unplaced rows
            return _plan(connection, limit)
        except LedgerError:  # queued rows went away under the read
            return Plan(-1, -1, _Gathered([], [], [], [], [], [], []), [], [], limit)
        finally:
            connection.rollback()


def append(
    engine: Engine,
    ahead: Plan | None,
    *,
    now: datetime,
    turn: AbstractContextManager[object] | None = None,
) -> int:
    """Store a plan's entries under the write lock; returns how many. A plan that is no
    longer current (the tree grew, or an erasure was cleaned up: a clean-up moves a
    subject's rows to a tombstone, which decides whether an entry keeps its body) is
    made again under the lock. No plan: nothing waited, and no lock is taken."""
    if ahead is None:
        return 0
    with turn or nullcontext(), exclusive(engine, cache_kib=SQLITE_CACHE_KIB) as connection:
        if not ahead.current(connection):
            again = _plan(connection, ahead.limit)
            if again is None:
                return 0
            ahead = again
        return _append(connection, ahead, now)


def _plan(connection: Connection, limit: int) -> Plan | None:
    cleaned = _erasures_cleaned(connection)
    start = size(connection)
    gathered = _gather(connection, limit)
    if not len(gathered):
        return None
    leaves = [bytes(leaf) for leaf in gathered.queue_leaves] + _leaf_hashes(gathered.pending)
    known = fetch_nodes(connection, merkle.root_nodes(start))
    interior = merkle.interior_hashes_created_by_appends(
        start, leaves, lambda level, index: known[level, index]
    )
    return Plan(start, cleaned, gathered, leaves, list(interior), limit)


_WAITING = (
    "SELECT EXISTS (SELECT 1 FROM ledger_queue)"
    " OR EXISTS (SELECT 1 FROM access_records WHERE ledger_index IS NULL)"
    " OR EXISTS (SELECT 1 FROM events WHERE ledger_index IS NULL)"
)

ERASURES_CLEANED = "erasures_cleaned"
_ERASURES_CLEANED = select(ledger_counters.c.value).where(
    ledger_counters.c.name == ERASURES_CLEANED
)


def _erasures_cleaned(connection: Connection) -> int:
    """How many erasures have been cleaned up: it grows with every clean-up, which
    runs under the sequencer's lock (`services.erasure.clean_up_erasure`) and counts
    itself with `count_erasure_cleaned_up`. One row read by its key."""
    return int(connection.execute(_ERASURES_CLEANED).scalar_one())


def count_erasure_cleaned_up(connection: Connection) -> None:
    """Record, in the clean-up's own transaction, that one more erasure was cleaned up:
    a batch the sequencer gathered before it is then gathered again."""
    bumped = connection.execute(
        update(ledger_counters)
        .where(ledger_counters.c.name == ERASURES_CLEANED)
        .values(value=ledger_counters.c.value + 1)
    )
    if bumped.rowcount != 1:
        raise LedgerError("the ledger_counters table has no erasures_cleaned row")


def _append(connection: Connection, ahead: Plan, now: datetime) -> int:
    gathered, start, leaves = ahead.gathered, ahead.start, ahead.leaves
    count = len(gathered)
    sequenced_at = _stamper(connection)(now)
    queue_runs = _runs(gathered.queue_ids, start)
    after_queue = start + len(gathered.queue_ids)
    erased = ERASED_SUBJECT_PREFIX
    like = erased + "%"
    entry_rows = [
        (index, kind, leaf, None, None, created, sequenced_at, sequenced_at)
        if subject is not None and subject.startswith(erased)
        else (index, kind, leaf, body, salt, created, sequenced_at, None)
        for index, leaf, (kind, body, salt, subject, _, created) in zip(
            range(after_queue, start + count),
            leaves[len(gathered.queue_ids) :],
            gathered.pending,
            strict=True,
        )
    ]
    node_rows = [(level, index, value) for (level, index), value in ahead.interior]
    consent_places, ref_rows = _queue_refs(gathered.queue_refs, start)
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    cursor = connection.connection.cursor()
    try:
        if gathered.missing_leaves:
            cursor.executemany(
                _QUEUE_LEAF.replace("?", mark),
                [(leaf, queue_id) for leaf, queue_id in gathered.missing_leaves],
            )
        if queue_runs:
            cursor.executemany(
                _QUEUE_COPY.replace("?", mark),
                [
                    (offset, like, like, sequenced_at, like, sequenced_at, first, last)
                    for offset, first, last in queue_runs
                ],
            )
        if entry_rows:
            cursor.executemany(_ENTRY_INSERT.replace("?", mark), entry_rows)
        if node_rows:
            cursor.executemany(_NODE_INSERT.replace("?", mark), node_rows)
        if consent_places:
            cursor.executemany(_CONSENT_PLACE.replace("?", mark), consent_places)
        if ref_rows:
            ref_insert = (
                _REF_INSERT_SQLITE if connection.dialect.name == "sqlite" else _REF_INSERT_PG
            )
            cursor.executemany(ref_insert.replace("?", mark), ref_rows)
        if queue_runs:
            cursor.executemany(_QUEUE_DELETE.replace("?", mark), [run[1:] for run in queue_runs])
        first = after_queue
        for table, ids in (
            ("access_records", gathered.access_ids),
            ("events", gathered.event_ids),
        ):
            runs = _runs(ids, first)
            if runs:
                cursor.executemany(_PLACE[table].replace("?", mark), runs)
            first += len(ids)
    finally:
        cursor.close()
    return count


ERASED_SUBJECT_PREFIX = "erased-"
"""Subject ids of this form are the anonymous tombstones erased subjects' records are
moved to. An entry about such a subject is placed without its body and salt: whatever
was still waiting for the sequencer when its subject was erased is erased on arrival."""

CONSENT_REF_PREFIX = "consent:"

_ENTRY_INSERT = (
    "INSERT INTO ledger_entries (idx, kind, leaf_hash, body, salt, "
    "created_at, sequenced_at, erased_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_NODE_INSERT = "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)"
_QUEUE_DELETE = "DELETE FROM ledger_queue WHERE id BETWEEN ? AND ?"
_QUEUE_LEAF = "UPDATE ledger_queue SET leaf_hash = ? WHERE id = ?"
# Queued entries are copied inside the database, their bodies never leaving it; one
# statement per run of consecutive queue ids, each row's index being its id + offset.
_QUEUE_COPY = (
    "INSERT INTO ledger_entries (idx, kind, leaf_hash, body, salt, created_at, "
    "sequenced_at, erased_at) "
    "SELECT id + ?, kind, leaf_hash, "
    "CASE WHEN subject_id LIKE ? THEN NULL ELSE body END, "
    "CASE WHEN subject_id LIKE ? THEN NULL ELSE salt END, "
    "created_at, ?, CASE WHEN subject_id LIKE ? THEN ? ELSE NULL END "
    "FROM ledger_queue WHERE id BETWEEN ? AND ? ORDER BY id"
)
_CONSENT_PLACE = "UPDATE consents SET ledger_index = id + ? WHERE id BETWEEN ? AND ?"
_REF_INSERT_SQLITE = "INSERT OR IGNORE INTO ledger_refs (ref, idx) VALUES (?, ?)"
_REF_INSERT_PG = "INSERT INTO ledger_refs (ref, idx) VALUES (?, ?) ON CONFLICT DO NOTHING"
# Each source row's entry index is its id plus the run's offset (see `_runs`).
_PLACE = {
    table: f"UPDATE {table} SET ledger_index = id + ? WHERE id BETWEEN ? AND ?"  # noqa: S608
    for table in ("access_records", "events")
}


def _queue_refs(
    refs: Sequence[str | None], first_index: int
) -> tuple[list[tuple[int, int, int]], list[tuple[str, int]]]:
    """For the references of queued entries placed from `first_index` on: runs of
    consents (see `_runs_of`; consecutive consent rows are usually placed
    consecutively), and (ref, index) for every other reference, into `ledger_refs`."""
    prefix = CONSENT_REF_PREFIX
    cut = len(prefix)
    consents: list[tuple[int, int]] = []
    ref_rows: list[tuple[str, int]] = []
    for index, ref in enumerate(refs, first_index):
        if ref is None:
            continue
        digits = ref[cut:]
        if ref[:cut] == prefix and digits.isdigit():
            consents.append((index, int(digits)))
        else:
            ref_rows.append((ref, index))
    return _runs_of(consents), ref_rows


def _runs(row_ids: Sequence[int], first_index: int) -> list[tuple[int, int, int]]:
    """`_runs_of` rows placed at consecutive indexes from `first_index`.

    A run covers only ids that were gathered (consecutive integers leave no room for
    another row), so a statement over the range touches no row that another
    transaction committed meanwhile.
    """
    return _runs_of(zip(range(first_index, first_index + len(row_ids)), row_ids, strict=True))


def _runs_of(placed: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(offset, first id, last id) for each run of (entry index, row id) pairs in which
    both go up by one, so that every row of the run gets the index `id + offset`."""
    runs: list[tuple[int, int, int]] = []
    offset = first = last = 0
    for index, row_id in placed:
        if runs and row_id == last + 1 and index - row_id == offset:
            last = row_id
            runs[-1] = (offset, first, last)
            continue
        offset, first, last = index - row_id, row_id, row_id
        runs.append((offset, first, last))
    return runs


def index_of_ref(connection: Connection, ref: str) -> int | None:
    """The index of the queued entry enqueued with `ref` (not a consent's), once placed."""
    value = connection.execute(select(ledger_refs.c.idx).where(ledger_refs.c.ref == ref)).scalar()
    return int(value) if value is not None else None


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str
    created_at: datetime


def checkpoint(engine: Engine, *, signer: Signer, now: datetime) -> SignedCheckpoint:
    """Sign and store a checkpoint of the current tree, unless the latest one already
    covers it; returns the latest checkpoint either way."""
    with exclusive(engine) as connection:
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
        return SignedCheckpoint(tree_size, tree_root, note, now)


def latest_checkpoint(connection: Connection) -> SignedCheckpoint | None:
    row = connection.execute(
        select(ledger_checkpoints).order_by(ledger_checkpoints.c.size.desc()).limit(1)
    ).first()
    return SignedCheckpoint(row.size, row.root, row.note, row.created_at) if row else None
