"""Consent per data subject and purpose: opt-in only, append-only history, each change
a ledger entry.

A subject's consent to a purpose is its latest row in `consents` for that purpose; no
row means no consent. Giving and withdrawing are the same call with `granted` true or
false. Every change records the version of the privacy notice the person was shown:
the first 12 hex digits of the SHA-256 of the policy file, from which the notice at
`/privacy` is generated (`current_notice_version`). A consent can only be given against the
notice in force; a withdrawal is accepted whatever version the person last saw.

Features that need a consent ask `has_consent` first and do nothing without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from parcelvault.adapters.db.store import AnyRow, inserted_id
from parcelvault.adapters.db.tables import consents, shipments, subjects
from parcelvault.domain.errors import Conflict, FieldProblem, Gone, InvalidInput, NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.privacy.policy import Policy
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

PURPOSES: tuple[str, ...] = ("notify_email", "notify_sms", "share_live_location", "analytics")

PURPOSE_LABELS: dict[str, str] = {
    "notify_email": "E-mail me when my parcel's status changes",
    "notify_sms": "Text me when my parcel's status changes",
    "share_live_location": "Show me the courier's live location on delivery day",
    "analytics": "Use my shipments in anonymous delivery statistics",
}

NOTICE_VERSION = re.compile(r"^[0-9A-Za-z._-]{1,32}$")
SOURCE = re.compile(r"^[a-z][a-z_]{0,15}$")
NOTICE_DIGITS = 12


def current_notice_version(policy: Policy) -> str:
    """The version of the privacy notice generated from `policy`."""
    return policy.digest[:NOTICE_DIGITS]


@dataclass(frozen=True)
class Consent:
    """One row of the history: a consent given (`granted`) or withdrawn."""

    id: int
    subject_id: str
    purpose: str
    granted: bool
    notice_version: str
    source: str
    shipment_id: str | None
    at: datetime


@dataclass(frozen=True)
class ConsentChange:
    """What `set_consent` left in force: `granted` for the purpose, whether this call
    changed anything, and the latest history row (None: never given)."""

    purpose: str
    granted: bool
    changed: bool
    consent: Consent | None


def _consent(row: AnyRow) -> Consent:
    return Consent(
        id=row.id,
        subject_id=row.subject_id,
        purpose=row.purpose,
        granted=bool(row.granted),
        notice_version=row.notice_version,
        source=row.source,
        shipment_id=row.shipment_id,
        at=row.at,
    )


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise InvalidInput(
            [FieldProblem(("purpose",), f"unknown purpose; one of: {', '.join(PURPOSES)}")]
        )
    return purpose


def current(connection: Connection, subject_id: str) -> dict[str, Consent]:
    """The latest row per purpose; a purpose without one is not consented to."""
    latest: dict[str, Consent] = {}
    query = select(consents).where(consents.c.subject_id == subject_id).order_by(consents.c.id)
    for row in connection.execute(query):
        latest[row.purpose] = _consent(row)
    return latest


def history(connection: Connection, subject_id: str) -> list[Consent]:
    """Every change the subject made, newest first."""
    query = (
        select(consents).where(consents.c.subject_id == subject_id).order_by(consents.c.id.desc())
    )
    return [_consent(row) for row in connection.execute(query)]


def _latest(connection: Connection, subject_id: str, purpose: str) -> Consent | None:
    row = connection.execute(
        select(consents)
        .where(consents.c.subject_id == subject_id, consents.c.purpose == purpose)
        .order_by(consents.c.id.desc())
        .limit(1)
    ).first()
    return _consent(row) if row is not None else None


def has_consent(connection: Connection, subject_id: str, purpose: str) -> bool:
    latest = _latest(connection, subject_id, check_purpose(purpose))
    return latest is not None and latest.granted


def _check(granted: object, notice: str, source: str) -> None:
    problems = []
    if not isinstance(granted, bool):
        problems.append(FieldProblem(("granted",), "must be true or false"))
    if not NOTICE_VERSION.match(notice):
        message = "must be the version of the notice shown (1-32 letters, digits, . _ -)"
        problems.append(FieldProblem(("notice_version",), message))
    if problems:
        raise InvalidInput(problems)
    if not SOURCE.match(source):
        raise ValueError("source must be 1-16 lowercase letters and underscores")


def _unchanged(latest: Consent | None, granted: bool, notice: str) -> bool:
    if not granted:
        return latest is None or not latest.granted
    return latest is not None and latest.granted and latest.notice_version == notice


def set_consent(
    *,
    vault: Vault,
    subject_id: str,
    purpose: str,
    granted: bool,
    notice_version: str,
    source: str,
    shipment_id: str | None = None,
) -> ConsentChange:
    """Give or withdraw a consent: a history row and a `consent` ledger entry in one
    transaction. Asking for what is already in force (a double submit, a withdrawal of
    what was never given) changes nothing and writes nothing; giving again under a
    newer notice is a change. An erased subject (no data key) is Gone: erasure
    deleted their consents, and nothing new is recorded about them. `shipment_id`, if
    given, says through which of the subject's shipments the consent was given."""
    check_purpose(purpose)
    _check(granted, notice_version, source)
    in_force = current_notice_version(vault.policy)
    if granted and notice_version != in_force:
        raise Conflict(
            f"the privacy notice has changed (now version {in_force}); "
            "show the current notice and ask again"
        )
    now = vault.clock()
    with read_then_write(vault) as connection:
        subject = connection.execute(
            select(subjects.c.id).where(subjects.c.id == subject_id).with_for_update()
        ).first()
        if subject is None:
            raise NotFound()
        if vault.keystore.get_one(subject_id) is None:
            raise Gone("the recipient's personal data was erased; nothing is recorded any more")
        if shipment_id is not None and not _owns(connection, subject_id, shipment_id):
            raise NotFound()
        latest = _latest(connection, subject_id, purpose)
        if _unchanged(latest, granted, notice_version):
            return ConsentChange(purpose, granted, False, latest)
        values = {
            "subject_id": subject_id,
            "purpose": purpose,
            "granted": granted,
            "notice_version": notice_version,
            "source": source,
            "shipment_id": shipment_id,
            "at": now,
        }
        row_id = inserted_id(connection, consents.insert().values(**values))
        ledger_log.enqueue(
            connection,
            kind="consent",
            body={
                "consent": row_id,
                "subject": subject_id,
                "purpose": purpose,
                "granted": granted,
                "notice_version": notice_version,
                "source": source,
                "at": now.isoformat(),
            },
            subject_id=subject_id,
            ref=f"consent:{row_id}",
            now=now,
        )
    recorded = Consent(
        id=row_id,
        subject_id=subject_id,
        purpose=purpose,
        granted=granted,
        notice_version=notice_version,
        source=source,
        shipment_id=shipment_id,
        at=now,
    )
    return ConsentChange(purpose, granted, True, recorded)


def _owns(connection: Connection, subject_id: str, shipment_id: str) -> bool:
    found = connection.execute(
        select(shipments.c.id).where(
            shipments.c.id == shipment_id, shipments.c.subject_id == subject_id
        )
    ).first()
    return found is not None


def states(latest: dict[str, Consent]) -> Sequence[tuple[str, Consent | None]]:
    """Every purpose in order, with its latest row (None: never given)."""
    return [(purpose, latest.get(purpose)) for purpose in PURPOSES]
