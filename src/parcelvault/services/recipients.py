"""Who a recipient-tier request speaks for: the shipment its verification cookie
names, and that shipment's data subject."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parcelvault.adapters.db import store
from parcelvault.domain.errors import DomainError, NotFound
from parcelvault.services import tracking
from parcelvault.services.vault import Vault


class RecipientUnverified(DomainError):
    """The shipment exists (anyone with its number may know that), but the request
    carries no valid recipient cookie for it."""


@dataclass(frozen=True)
class VerifiedRecipient:
    shipment_id: str
    subject_id: str


def verified_recipient(
    *, vault: Vault, raw_number: str, cookies: Mapping[str, str], tenant: str | None = None
) -> VerifiedRecipient:
    """The verified recipient of the shipment `raw_number` denotes. An unknown number
    is NotFound; a known one without a valid cookie for it is RecipientUnverified."""
    resolved = tracking.resolve(vault=vault, raw_number=raw_number, cookies=cookies, tenant=tenant)
    if resolved.viewer.tier != "recipient":
        raise RecipientUnverified()
    with vault.engine.connect() as connection:
        shipment = store.shipment_by_id(connection, resolved.shipment_id)
    if shipment is None:
        raise NotFound()
    return VerifiedRecipient(shipment.id, shipment.subject_id)
