"""Legal holds: a shipment under hold keeps its data; neither erasure nor retention
touches it until the hold is released. A hold names its matter by a case reference
(a claim or case number, never a person's name)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from parcelvault.adapters.db.store import chunks, inserted_id
from parcelvault.adapters.db.tables import legal_holds, shipments
from parcelvault.domain.errors import Conflict, FieldProblem, InvalidInput, NotFound
from parcelvault.services.tracking import find_shipment
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

CASE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/#:-]{0,99}$")


@dataclass(frozen=True)
class Hold:
    id: int
    shipment_id: str
    tracking_number: str
    case_ref: str
    placed_by: str
    placed_at: datetime


def describe(holds: Sequence[Hold]) -> str:
    """One sentence naming the holds, for error messages."""
    named = ", ".join(
        f"{h.case_ref} on shipment {h.tracking_number} since {h.placed_at:%Y-%m-%d}" for h in holds
    )
    return f"under legal hold ({named})"


class UnderHold(Conflict):
    """An erasure or removal refused because of legal holds."""

    def __init__(self, holds: Sequence[Hold], what: str) -> None:
        super().__init__(f"{what} is blocked: {describe(holds)}")
        self.holds = list(holds)


_HOLDS = (
    select(legal_holds, shipments.c.tracking_number)
    .join(shipments, shipments.c.id == legal_holds.c.shipment_id)
    .order_by(legal_holds.c.id)
)
_ACTIVE = _HOLDS.where(legal_holds.c.released_at.is_(None))


def _hold(row: Row[Any]) -> Hold:
    return Hold(
        row.id, row.shipment_id, row.tracking_number, row.case_ref, row.placed_by, row.placed_at
    )


def active_holds(connection: Connection, shipment_ids: Iterable[str]) -> list[Hold]:
    found: list[Hold] = []
    for chunk in chunks(sorted(set(shipment_ids))):
        query = _ACTIVE.where(legal_holds.c.shipment_id.in_(chunk))
        found.extend(_hold(r) for r in connection.execute(query))
    return found


def active_holds_of_subject(connection: Connection, subject_id: str) -> list[Hold]:
    """The active holds on any shipment of a subject (one query, however many)."""
    query = _ACTIVE.where(shipments.c.subject_id == subject_id)
    return [_hold(r) for r in connection.execute(query)]


def place(
    *, vault: Vault, raw_number: str, case_ref: str, placed_by: str, tenant: str | None = None
) -> Hold:
    if not CASE_REF.match(case_ref):
        message = "1-100 letters, digits and . _ / # : - (a case or claim number, not a name)"
        raise InvalidInput([FieldProblem(("case_ref",), message)])
    now = vault.clock()
    with read_then_write(vault) as connection:
        shipment = find_shipment(connection, raw_number, tenant)
        existing = [h for h in active_holds(connection, [shipment.id]) if h.case_ref == case_ref]
        if existing:
            raise Conflict(f"shipment is already held for {case_ref}")
        hold_id = inserted_id(
            connection,
            legal_holds.insert().values(
                shipment_id=shipment.id,
                case_ref=case_ref,
                placed_by=placed_by,
                placed_at=now,
            ),
        )
        return Hold(hold_id, shipment.id, shipment.tracking_number, case_ref, placed_by, now)


def release(*, vault: Vault, hold_id: int, released_by: str) -> Hold:
    now = vault.clock()
    with read_then_write(vault) as connection:
        row = connection.execute(_HOLDS.where(legal_holds.c.id == hold_id)).first()
        if row is None:
            raise NotFound()
        if row.released_at is not None:
            raise Conflict(f"hold {hold_id} was already released")
        connection.execute(
            update(legal_holds)
            .where(legal_holds.c.id == hold_id)
            .values(released_at=now, released_by=released_by)
        )
        return _hold(row)


@dataclass(frozen=True)
class HoldLine:
    hold: Hold
    released_at: datetime | None
    released_by: str | None


def list_holds(*, vault: Vault, include_released: bool = False) -> list[HoldLine]:
    """Holds in the order they were placed; active ones only unless asked."""
    query = _HOLDS if include_released else _ACTIVE
    with vault.engine.connect() as connection:
        return [HoldLine(_hold(r), r.released_at, r.released_by) for r in connection.execute(query)]
