"""A recipient corrects their delivery address while the parcel is still on its way.

Correctable: the street lines, the postcode and the delivery notes (each only if the
policy declares it), before the parcel is out for delivery, and again when the courier
reports a problem with the address (an exception or a failed attempt for
`address_problem`), so the next attempt goes to the right place. The new values
are sealed under the subject's data key like any personal value; `address_corrections`
keeps which fields changed and when, never the values, and so does the correction's
`correction` entry in the transparency ledger (queued in the same transaction),
so when the address on file changed can be proven later. A postcode correction also
replaces the keyed postcode hash, so the old postcode no longer verifies (a recipient
cookie already issued stays valid: it is bound to the shipment, not to the postcode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, select, update

from parcelvault.adapters.db import store
from parcelvault.adapters.db.tables import (
    address_corrections,
    ledger_refs,
    sealed_fields,
    shipments,
)
from parcelvault.crypto import keyed_hash
from parcelvault.crypto.sealing import associated_data, open_records, seal
from parcelvault.domain.errors import Conflict, FieldProblem, Gone, InvalidInput, NotFound
from parcelvault.domain.statuses import Reason, Status
from parcelvault.ledger import log as ledger_log
from parcelvault.services.consent import SOURCE
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

STREET = "destination.street"
POSTCODE = "destination.postcode"
NOTES = "destination.notes"
CORRECTABLE = (STREET, POSTCODE, NOTES)
OPEN_STATUSES = frozenset({Status.PENDING, Status.INFO_RECEIVED, Status.IN_TRANSIT})
"""Statuses in which the address may still change: before out_for_delivery."""
ADDRESS_PROBLEM_STATUSES = frozenset({Status.EXCEPTION, Status.FAILED_ATTEMPT})
"""Statuses in which the address may change again if their reason is `address_problem`."""


def address_correctable(status: Status, reason: str | None) -> bool:
    """Whether a parcel in `status` (its latest event's `reason`) takes an address
    correction."""
    return status in OPEN_STATUSES or (
        status in ADDRESS_PROBLEM_STATUSES and reason == Reason.ADDRESS_PROBLEM.value
    )


STREET_LINES_MAX = 4
STREET_LINE_MAX = 200
POSTCODE_MIN = 2
POSTCODE_MAX = 12
NOTES_MAX = 300
"""The limits of the ingest wire format (`adapters.wire.DestinationIn`)."""


@dataclass(frozen=True)
class Correction:
    """The fields a correction changed (empty: every value was already as asked)."""

    shipment_id: str
    fields: tuple[str, ...]
    at: datetime


def short_name(field: str) -> str:
    """`destination.street` -> `street`: how forms and request bodies name a field."""
    return field.rpartition(".")[2]


def _control_free(text: str, *, allow_newlines: bool = False) -> bool:
    allowed = {"\n"} if allow_newlines else set()
    return not any((ord(c) < 0x20 or ord(c) == 0x7F) and c not in allowed for c in text)


def _street(value: str, problems: list[FieldProblem]) -> str:
    lines = [line.strip() for line in value.split("\n")]
    if not value.strip() or len(lines) > STREET_LINES_MAX:
        problems.append(FieldProblem(("street",), f"1 to {STREET_LINES_MAX} lines"))
        return value
    for number, line in enumerate(lines):
        if not 1 <= len(line) <= STREET_LINE_MAX:
            message = f"each line 1 to {STREET_LINE_MAX} characters"
            problems.append(FieldProblem(("street", number), message))
        elif not _control_free(line):
            problems.append(FieldProblem(("street", number), "control characters"))
    return "\n".join(lines)


def _postcode(value: str, problems: list[FieldProblem]) -> str:
    postcode = value.strip()
    if not POSTCODE_MIN <= len(postcode) <= POSTCODE_MAX:
        message = f"{POSTCODE_MIN} to {POSTCODE_MAX} characters"
        problems.append(FieldProblem(("postcode",), message))
    elif not _control_free(postcode) or not any(c.isalnum() for c in postcode):
        problems.append(FieldProblem(("postcode",), "letters, digits, spaces and hyphens"))
    return postcode


def _notes(value: str, problems: list[FieldProblem]) -> str | None:
    notes = value.strip()
    if len(notes) > NOTES_MAX:
        problems.append(FieldProblem(("notes",), f"at most {NOTES_MAX} characters"))
    elif not _control_free(notes, allow_newlines=True):
        problems.append(FieldProblem(("notes",), "control characters"))
    return notes or None


def checked_changes(changes: Mapping[str, str], correctable: set[str]) -> dict[str, str | None]:
    """The changes, trimmed and checked; None removes the delivery notes. Raises
    InvalidInput naming every bad field (by its short name) at once."""
    problems: list[FieldProblem] = []
    if not changes:
        names = ", ".join(short_name(f) for f in CORRECTABLE if f in correctable)
        raise InvalidInput([FieldProblem((), f"name at least one of: {names}")])
    checked: dict[str, str | None] = {}
    for field, value in changes.items():
        if field not in correctable:
            problems.append(FieldProblem((short_name(field),), "cannot be corrected"))
        elif not isinstance(value, str):
            problems.append(FieldProblem((short_name(field),), "must be text"))
        elif field == STREET:
            checked[field] = _street(value, problems)
        elif field == POSTCODE:
            checked[field] = _postcode(value, problems)
        else:
            checked[field] = _notes(value, problems)
    if problems:
        raise InvalidInput(problems)
    return checked


def correctable_fields(vault: Vault) -> set[str]:
    return {field for field in CORRECTABLE if vault.policy.is_personal(field)}


def correct_address(
    *, vault: Vault, shipment_id: str, changes: dict[str, str], source: str
) -> Correction:
    """Correct `changes` (policy field name -> new value; the street as its lines
    joined by newlines, as ingest stores it; empty notes remove them). One
    transaction: re-sealed values, the new postcode hash, the correction record, its
    ledger entry and a version bump, so every cached view of the shipment is rebuilt."""
    if not SOURCE.match(source):
        raise ValueError("source must be 1-16 lowercase letters and underscores")
    checked = checked_changes(changes, correctable_fields(vault))
    now = vault.clock()
    with read_then_write(vault) as connection:
        shipment = connection.execute(
            select(shipments.c.id, shipments.c.subject_id, shipments.c.status)
            .where(shipments.c.id == shipment_id)
            .with_for_update()
        ).first()
        if shipment is None:
            raise NotFound()
        status = Status(shipment.status)
        reason = (
            store.status_reasons(connection, [shipment_id]).get(shipment_id)
            if status in ADDRESS_PROBLEM_STATUSES
            else None
        )
        if not address_correctable(status, reason):
            raise Conflict(
                "the address can only be corrected before the parcel is out for delivery, "
                "or after the courier reported a problem with it; "
                f"its status is {shipment.status}" + (f" ({reason})" if reason else "")
            )
        key = vault.keystore.get_one(shipment.subject_id)
        if key is None:
            raise Gone("the recipient's personal data was erased; there is no address to correct")
        cipher = vault.keyring.unwrap(key.wrapped, shipment.subject_id)
        stored = _opened(connection, cipher, shipment.subject_id, shipment_id)
        changed = {f: v for f, v in checked.items() if stored.get(f) != v}
        if not changed:
            return Correction(shipment_id, (), now)
        names = sorted(changed)
        connection.execute(
            delete(sealed_fields).where(
                sealed_fields.c.shipment_id == shipment_id,
                sealed_fields.c.record_id == shipment_id,
                sealed_fields.c.field.in_(names),
            )
        )
        sealed = [
            {
                "shipment_id": shipment_id,
                "record_id": shipment_id,
                "field": field,
                "subject_id": shipment.subject_id,
                "value": seal(
                    cipher, value, associated_data(shipment.subject_id, shipment_id, field)
                ),
            }
            for field, value in sorted(changed.items())
            if value is not None
        ]
        if sealed:
            connection.execute(sealed_fields.insert(), sealed)
        bump: dict[str, Any] = {"version": shipments.c.version + 1}
        new_postcode = changed.get(POSTCODE)
        if new_postcode is not None:
            bump["postcode_digest"] = keyed_hash.postcode_digest(
                vault.keyring.lookup_key, record_id=shipment_id, postcode=new_postcode
            )
        connection.execute(update(shipments).where(shipments.c.id == shipment_id).values(bump))
        correction_id = store.inserted_id(
            connection,
            address_corrections.insert().values(
                shipment_id=shipment_id, fields=",".join(names), source=source, at=now
            ),
        )
        ledger_log.enqueue(
            connection,
            kind="correction",
            body={
                "correction": correction_id,
                "shipment": shipment_id,
                "subject": shipment.subject_id,
                "fields": names,
                "source": source,
                "at": now.isoformat(),
            },
            subject_id=shipment.subject_id,
            ref=ledger_ref(correction_id),
            now=now,
        )
    return Correction(shipment_id, tuple(names), now)


def ledger_ref(correction_id: int) -> str:
    """The reference a correction's ledger entry is found by (`ledger_refs`)."""
    return f"correction:{correction_id}"


@dataclass(frozen=True)
class PastCorrection:
    fields: tuple[str, ...]
    source: str
    at: datetime
    ledger_index: int | None
    """None until the sequencer has placed its entry."""


def history(connection: Connection, shipment_ids: Sequence[str]) -> dict[str, list[PastCorrection]]:
    """The corrections of these shipments, oldest first, each with its ledger entry."""
    rows: list[store.AnyRow] = []
    for chunk in store.chunks(sorted(set(shipment_ids))):
        rows.extend(
            connection.execute(
                select(address_corrections).where(address_corrections.c.shipment_id.in_(chunk))
            )
        )
    rows.sort(key=lambda row: row.id)
    placed: dict[str, int] = {}
    for chunk in store.chunks([ledger_ref(row.id) for row in rows]):
        query = select(ledger_refs.c.ref, ledger_refs.c.idx).where(ledger_refs.c.ref.in_(chunk))
        placed.update((ref, int(index)) for ref, index in connection.execute(query))
    found: dict[str, list[PastCorrection]] = {}
    for row in rows:
        found.setdefault(row.shipment_id, []).append(
            PastCorrection(
                tuple(name for name in row.fields.split(",") if name),
                row.source,
                row.at,
                placed.get(ledger_ref(row.id)),
            )
        )
    return found


def _opened(
    connection: Connection, cipher: AESGCM, subject_id: str, shipment_id: str
) -> dict[str, str]:
    """The current values of the correctable fields (a value that fails to open counts
    as different from anything asked for)."""
    rows = [
        r
        for r in store.sealed_of_shipments(connection, [shipment_id])
        if r.record_id == shipment_id and r.field in CORRECTABLE
    ]
    opened, _ = open_records(cipher, subject_id, rows)
    return opened.get(shipment_id, {})
