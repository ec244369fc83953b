"""Erasure of a data subject (GDPR Art. 17) by crypto-shredding, and reconciliation of
the database with the key store after either is restored from a backup.

Erasure happens in two steps:

1. **Shred** (constant time in the subject's data): destroy the subject's data key in
   the key store, write the erasure receipt (which names only the destroyed key's
   random id), mark the subject erased, advance the version of its shipments (every
   cached view and snapshot is keyed by version) and queue an `erasure` ledger entry.
   From this moment nothing the subject ever gave can be opened: not here, not in any
   copy or backup of the database, because the key is in none of them.
2. **Clean up** (proportional to the data; runs right after, and again from
   `reconcile` if a crash came between): move the subject's shipments and access
   records to an anonymous tombstone subject, delete their ciphertexts, postcode
   digests, consents, one-time codes and sessions, delete the bodies and salts of the
   ledger entries about them (their leaves stay, so the log still verifies), and
   delete the subject row, whose id is a keyed hash of their contact. What remains is
   the anonymous skeleton: statuses, times, cities and countries, for statistics.

A legal hold on any of the subject's shipments blocks the whole erasure.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, union_all, update

from parcelvault.adapters.db import store
from parcelvault.adapters.db.store import chunks
from parcelvault.adapters.db.tables import (
    access_records,
    consents,
    erasures,
    events,
    ledger_checkpoints,
    ledger_entries,
    ledger_queue,
    otp_challenges,
    sealed_fields,
    shipments,
    subject_sessions,
    subjects,
)
from parcelvault.crypto.keyed_hash import ERASED_DIGEST
from parcelvault.domain.errors import NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.services.corrections import history
from parcelvault.services.holds import UnderHold, active_holds_of_subject
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

log = logging.getLogger(__name__)

TOMBSTONE_PREFIX = ledger_log.ERASED_SUBJECT_PREFIX


@dataclass(frozen=True)
class ErasureReceipt:
    id: str
    at: datetime
    shipments: int
    ledger_ref: str


@dataclass(frozen=True)
class ReconcileReport:
    keys_destroyed_again: int
    erasures_completed: int
    receipts_recovered: int


def _ledger_ref(receipt_id: str) -> str:
    return f"erasure:{receipt_id}"


def shipment_ids_of(connection: Connection, subject_id: str) -> list[str]:
    query = select(shipments.c.id).where(shipments.c.subject_id == subject_id)
    return list(connection.execute(query).scalars())


def erase_subject(
    *, vault: Vault, subject_id: str, requested_by: str, clean_up: bool = True
) -> ErasureReceipt:
    """Erase a subject; raises NotFound for an unknown (or already erased) subject and
    UnderHold when a legal hold covers any of its shipments."""
    now = vault.clock()
    receipt_id = secrets.token_hex(16)
    # From the hold check to the key's destruction nothing may place a hold: the write
    # lock (SQLite) or the subject's shipment rows (PostgreSQL, which a hold's insert
    # must share) are held by this transaction, also against other processes.
    with read_then_write(vault) as connection:
        subject = connection.execute(
            select(subjects.c.key_id, subjects.c.erased_at).where(subjects.c.id == subject_id)
        ).first()
        if subject is None or subject.erased_at is not None:
            raise NotFound()
        store.lock_shipments_of_subject(connection, subject_id)
        holds = active_holds_of_subject(connection, subject_id)
        if holds:
            raise UnderHold(holds, "erasure")
        destroyed = vault.keystore.destroy(subject_id, now=now)
        key_id = destroyed.key_id if destroyed is not None else subject.key_id
        count = _record_shred(
            connection,
            receipt_id=receipt_id,
            subject_id=subject_id,
            key_id=key_id or secrets.token_hex(16),
            requested_by=requested_by,
            now=now,
        )
    log.info("subject erased", extra={"erasure": receipt_id, "shipments": count})
    if clean_up:
        clean_up_erasure(vault=vault, receipt_id=receipt_id)
    return ErasureReceipt(receipt_id, now, count, _ledger_ref(receipt_id))


def _record_shred(
    connection: Connection,
    *,
    receipt_id: str,
    subject_id: str,
    key_id: str,
    requested_by: str,
    now: datetime,
) -> int:
    """The database's half of step 1, once the key is gone: the receipt, the subject
    marked erased, every shipment's version advanced (no cached view or snapshot
    survives), sessions ended, the ledger entry queued. Returns the shipment count."""
    count: int = connection.execute(
        select(func.count()).where(shipments.c.subject_id == subject_id)
    ).scalar_one()
    connection.execute(
        insert(erasures).values(
            id=receipt_id,
            key_id=key_id,
            at=now,
            requested_by=requested_by,
            shipments=count,
            cleaned_at=None,
        )
    )
    connection.execute(update(subjects).where(subjects.c.id == subject_id).values(erased_at=now))
    connection.execute(
        update(shipments)
        .where(shipments.c.subject_id == subject_id)
        .values(version=shipments.c.version + 1)
    )
    connection.execute(
        update(subject_sessions)
        .where(subject_sessions.c.subject_id == subject_id, subject_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )
    ledger_log.enqueue(
        connection,
        kind="erasure",
        body={"erasure": receipt_id, "at": now.isoformat(), "shipments": count},
        subject_id=None,
        ref=_ledger_ref(receipt_id),
        now=now,
    )
    return count


def clean_up_erasure(*, vault: Vault, receipt_id: str) -> None:
    """Step 2 of an erasure (idempotent; see the module's docstring)."""
    now = vault.clock()
    with vault.engine.connect() as connection:
        receipt = connection.execute(select(erasures).where(erasures.c.id == receipt_id)).first()
    if receipt is None:
        raise NotFound()
    if receipt.cleaned_at is not None:
        return
    tombstone = TOMBSTONE_PREFIX + receipt_id
    # Under the sequencer's lock, so that no entry is placed between finding the
    # subject's entries and moving its records to the tombstone: entries placed before
    # lose their bodies here, entries placed after arrive without them (see
    # `ledger_log.ERASED_SUBJECT_PREFIX`).
    with vault.writing(), ledger_log.exclusive(vault.engine) as connection:
        old = connection.execute(
            select(subjects.c.id).where(subjects.c.key_id == receipt.key_id)
        ).scalar()
        for subject in (old, tombstone):
            if subject is not None:
                _erase_ledger_bodies(connection, subject, now)
        _move_to_tombstone(connection, old, tombstone, now)
        connection.execute(
            update(erasures).where(erasures.c.id == receipt_id).values(cleaned_at=now)
        )
        ledger_log.count_erasure_cleaned_up(connection)
    if old is not None:
        vault.keystore.destroy(old, now=now)


def _move_to_tombstone(
    connection: Connection, old: str | None, tombstone: str, now: datetime
) -> None:
    exists = connection.execute(select(subjects.c.id).where(subjects.c.id == tombstone)).first()
    if exists is None:
        connection.execute(
            insert(subjects).values(id=tombstone, key_id=None, created_at=now, erased_at=now)
        )
    if old is None:
        return
    _delete_sealed(connection, old)
    connection.execute(
        update(shipments)
        .where(shipments.c.subject_id == old)
        .values(
            subject_id=tombstone,
            postcode_digest=ERASED_DIGEST,
            version=shipments.c.version + 1,
        )
    )
    connection.execute(
        update(access_records)
        .where(access_records.c.subject_id == old)
        .values(subject_id=tombstone, reference=None)
    )
    connection.execute(
        update(ledger_queue).where(ledger_queue.c.subject_id == old).values(subject_id=tombstone)
    )
    for table in (consents, otp_challenges, subject_sessions):
        connection.execute(delete(table).where(table.c.subject_id == old))
    connection.execute(delete(subjects).where(subjects.c.id == old))


def _delete_sealed(connection: Connection, subject_id: str) -> None:
    """Delete the subject's ciphertexts: every value stored under its shipments, their
    proofs' included (see `tables.sealed_fields`)."""
    for chunk in chunks(shipment_ids_of(connection, subject_id)):
        connection.execute(delete(sealed_fields).where(sealed_fields.c.shipment_id.in_(chunk)))


def _erase_ledger_bodies(connection: Connection, subject_id: str, now: datetime) -> None:
    """Delete the body and salt of every placed entry about the subject, found through
    the rows it records: its shipments' events, its access records, its consents and
    its address corrections."""
    placed = union_all(
        select(events.c.ledger_index)
        .join(shipments, shipments.c.id == events.c.shipment_id)
        .where(shipments.c.subject_id == subject_id, events.c.ledger_index.is_not(None)),
        select(access_records.c.ledger_index).where(
            access_records.c.subject_id == subject_id, access_records.c.ledger_index.is_not(None)
        ),
        select(consents.c.ledger_index).where(
            consents.c.subject_id == subject_id, consents.c.ledger_index.is_not(None)
        ),
    )
    indexes = sorted(
        int(index)
        for index in (
            *connection.execute(placed).scalars(),
            *_correction_entries(connection, subject_id),
        )
    )
    for chunk in chunks(indexes):
        connection.execute(
            update(ledger_entries)
            .where(ledger_entries.c.idx.in_(chunk), ledger_entries.c.body.is_not(None))
            .values(body=None, salt=None, erased_at=now)
        )


def _correction_entries(connection: Connection, subject_id: str) -> list[int]:
    """The placed ledger entries of the address corrections of the subject's shipments."""
    corrected = history(connection, shipment_ids_of(connection, subject_id))
    return [
        past.ledger_index
        for pasts in corrected.values()
        for past in pasts
        if past.ledger_index is not None
    ]


def receipt_details(*, vault: Vault, receipt_id: str) -> dict[str, Any]:
    """A receipt as shown to the person: when, how many shipments, and where the
    erasure sits in the transparency log (index and the first checkpoint covering it)
    once the sequencer has placed it."""
    with vault.engine.connect() as connection:
        receipt = connection.execute(select(erasures).where(erasures.c.id == receipt_id)).first()
        if receipt is None:
            raise NotFound()
        index = ledger_log.index_of_ref(connection, _ledger_ref(receipt_id))
        checkpoint = None
        if index is not None:
            checkpoint = connection.execute(
                select(ledger_checkpoints.c.size, ledger_checkpoints.c.note)
                .where(ledger_checkpoints.c.size > index)
                .order_by(ledger_checkpoints.c.size)
                .limit(1)
            ).first()
    return {
        "receipt": receipt.id,
        "erased_at": receipt.at.isoformat(),
        "shipments": receipt.shipments,
        "requested_by": receipt.requested_by,
        "completed": receipt.cleaned_at is not None,
        "ledger_index": index,
        "checkpoint_size": checkpoint.size if checkpoint is not None else None,
        "checkpoint": checkpoint.note if checkpoint is not None else None,
    }


def reconcile(*, vault: Vault) -> ReconcileReport:
    """Bring the database and the key store back in line after either was restored
    from a backup older than some erasures (or a crash split an erasure):

    - a key the database's receipts name as destroyed is destroyed again;
    - a subject whose key the key store lists as destroyed, but that the database
      (restored from before the erasure) does not know as erased, is erased again,
      with a receipt marked `reconcile`;
    - a receipt whose clean-up did not finish is finished.
    """
    now = vault.clock()
    with vault.engine.connect() as connection:
        receipted = {row.key_id: row for row in connection.execute(select(erasures))}
    again = vault.keystore.destroy_key_ids(receipted, now=now)
    destroyed = vault.keystore.destroyed_ids()
    unreceipted = sorted(destroyed - set(receipted))
    recovered = 0
    with vault.writing(), vault.engine.begin() as connection:
        for chunk in chunks(unreceipted):
            rows = connection.execute(
                select(subjects.c.id, subjects.c.key_id).where(subjects.c.key_id.in_(chunk))
            ).all()
            for row in rows:
                _record_shred(
                    connection,
                    receipt_id=secrets.token_hex(16),
                    subject_id=row.id,
                    key_id=row.key_id,
                    requested_by="reconcile",
                    now=now,
                )
                recovered += 1
        pending = list(
            connection.execute(
                select(erasures.c.id).where(erasures.c.cleaned_at.is_(None))
            ).scalars()
        )
    for receipt_id in pending:
        clean_up_erasure(vault=vault, receipt_id=receipt_id)
    if again or recovered or pending:
        log.warning(
            "key store and database reconciled",
            extra={
                "keys_destroyed_again": again,
                "recovered": recovered,
                "completed": len(pending),
            },
        )
    return ReconcileReport(again, len(pending), recovered)
