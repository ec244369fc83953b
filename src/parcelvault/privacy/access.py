"""Access records: who was shown which personal fields, when, and why.

Every disclosure of a personal field to anyone but the data subject becomes one
record, written in the same transaction as the read. Two tiers are exempt by design:
`recipient` (the subject looking at their own data) and `public` (the policy only
lets the public see forms it declares non-identifying, such as initials; recording
anonymous lookups would itself create data about visitors).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

UNRECORDED_TIERS = frozenset({"public", "recipient"})


@dataclass(frozen=True)
class Viewer:
    tier: str
    actor_kind: str
    actor_id: str | None = None
    purpose: str = "delivery"
    reason: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class AccessRecord:
    at: datetime
    shipment_id: str
    subject_id: str
    tier: str
    actor_kind: str
    actor_id: str | None
    fields: tuple[str, ...]
    purpose: str
    reason: str | None
    reference: str | None


def access_for(
    viewer: Viewer, *, shipment_id: str, subject_id: str, shown: Iterable[str], now: datetime
) -> AccessRecord | None:
    """The record a view disclosing the personal fields `shown` calls for, if any."""
    fields = tuple(sorted(set(shown)))
    if not fields or viewer.tier in UNRECORDED_TIERS:
        return None
    return AccessRecord(
        at=now,
        shipment_id=shipment_id,
        subject_id=subject_id,
        tier=viewer.tier,
        actor_kind=viewer.actor_kind,
        actor_id=viewer.actor_id,
        fields=fields,
        purpose=viewer.purpose,
        reason=viewer.reason,
        reference=viewer.reference,
    )
