"""Shipments planted through the real ingest path, for tests of the data subject's
rights (consent, address correction, erasure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from parcelvault.adapters.db.tables import shipments
from parcelvault.adapters.wire import EventIn, ShipmentIn
from parcelvault.domain.errors import InvalidInput
from parcelvault.services import consent, operations, tenants
from parcelvault.services.vault import Vault
from tests.conftest import shipment_payload


def plant(vault: Vault, tenant: str = "shop-s", **overrides: Any) -> tuple[str, str, str]:
    """(tracking number, shipment id, subject id) of a new shipment."""
    try:
        principal = tenants.tenant_principal(vault=vault, name=tenant)
    except InvalidInput:
        tenants.create_tenant(vault=vault, name=tenant)
        principal = tenants.tenant_principal(vault=vault, name=tenant)
    payload = ShipmentIn.model_validate(shipment_payload(**overrides))
    view = operations.create_shipment(
        vault=vault, principal=principal, shipment=payload.to_domain()
    )
    with vault.engine.connect() as connection:
        row = connection.execute(
            select(shipments.c.id, shipments.c.subject_id).where(
                shipments.c.tracking_number == view.tracking_number
            )
        ).one()
    return view.tracking_number, row.id, row.subject_id


_EVENTS = itertools.count(1)
_START = datetime.now(UTC) - timedelta(days=30)


def scan(
    vault: Vault, number: str, status: str, tenant: str = "shop-s", reason: str | None = None
) -> None:
    """A scan event moving the shipment to `status`, later than every earlier one."""
    principal = tenants.tenant_principal(vault=vault, name=tenant)
    serial = next(_EVENTS)
    event = EventIn.model_validate(
        {
            "event_id": f"{number}-{serial}",
            "time": (_START + timedelta(minutes=serial)).isoformat(),
            "status": status,
            **({"reason": reason} if reason else {}),
        }
    )
    operations.ingest_events(vault=vault, principal=principal, items=[(number, event.to_domain())])


def version_of(vault: Vault, shipment_id: str) -> int:
    with vault.engine.connect() as connection:
        value = connection.execute(
            select(shipments.c.version).where(shipments.c.id == shipment_id)
        ).scalar_one()
    return int(value)


def give(vault: Vault, subject: str, purpose: str, granted: bool = True) -> consent.ConsentChange:
    """A consent change as the recipient API makes it, under the current notice."""
    return consent.set_consent(
        vault=vault,
        subject_id=subject,
        purpose=purpose,
        granted=granted,
        notice_version=consent.current_notice_version(vault.policy),
        source="recipient_api",
    )
