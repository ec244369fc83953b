"""Export of everything held about a data subject (GDPR Art. 15 and 20).

The export is JSON with a versioned schema, `parcelvault-export/1` (documented in
docs/export.md), and the same content rendered as a page a person can read. It lists
every shipment of the subject across tenants, every scan event, every personal field
(opened with the subject's key), the address corrections (which fields, when), the
consent history and every access record about them. An erased subject's export holds
no personal value: the key that opened them is gone, so the shipments appear with
`"erased": true` and nothing else personal.

An export for the subject themself (privacy centre) is not an access record: people
seeing their own data is not a disclosure. An operator's export (`parcelvault
subjects export`) is one access record per shipment, purpose `subject_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, select

from parcelvault.adapters.db import store
from parcelvault.adapters.db.store import AnyRow
from parcelvault.adapters.db.tables import access_records, consents, shipments, tenants
from parcelvault.crypto.sealing import open_records
from parcelvault.domain.errors import NotFound
from parcelvault.privacy.access import AccessRecord
from parcelvault.services import corrections
from parcelvault.services.ingest import event_row_id
from parcelvault.services.ledger_views import _actors
from parcelvault.services.vault import Vault

log = logging.getLogger(__name__)

SCHEMA = "parcelvault-export/1"
OPERATOR_TIER = "admin"
SUBJECT_REQUEST = "subject_request"
_TEMPLATES = Path(__file__).resolve().parent.parent / "entrypoints" / "web" / "templates"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _opened(
    vault: Vault, subject_id: str, sealed: Sequence[AnyRow]
) -> tuple[dict[str, dict[str, str]], bool]:
    """record id -> field -> value, and whether the subject's key still exists."""
    key = vault.keystore.get_one(subject_id)
    if key is None:
        return {}, False
    opened, failed = open_records(vault.keyring.unwrap(key.wrapped, subject_id), subject_id, sealed)
    for record_id, name in failed:
        log.warning("sealed value failed to open", extra={"record": record_id, "field": name})
    return opened, True


def _shipment_rows(
    connection: Connection, subject_id: str, only_shipment: str | None
) -> list[AnyRow]:
    query = (
        select(shipments, tenants.c.name.label("tenant_name"))
        .join(tenants, tenants.c.id == shipments.c.tenant_id)
        .where(shipments.c.subject_id == subject_id)
        .order_by(shipments.c.created_at, shipments.c.id)
    )
    if only_shipment is not None:
        query = query.where(shipments.c.id == only_shipment)
    return list(connection.execute(query))


def export_subject(
    *, vault: Vault, subject_id: str, requested_by: str, only_shipment: str | None = None
) -> dict[str, Any]:
    """Everything about the subject. `requested_by` is `subject` for the person
    themself, or `operator:<name>` for an operator (which records the access).

    `only_shipment` limits the export to one shipment and the access records about
    it: for a visitor who proved only that they are that shipment's recipient (by
    its postcode), not that they control the contact shared by all their shipments."""
    now = vault.clock()
    with vault.engine.connect() as connection:
        rows = _shipment_rows(connection, subject_id, only_shipment)
        if not rows:
            raise NotFound()
        events_by_shipment = {row.id: store.events_of(connection, row.id) for row in rows}
        sealed = store.sealed_of_shipments(connection, [row.id for row in rows])
        consent_rows = (
            []
            if only_shipment is not None
            else list(
                connection.execute(
                    select(consents)
                    .where(consents.c.subject_id == subject_id)
                    .order_by(consents.c.id)
                )
            )
        )
        about = select(access_records).where(access_records.c.subject_id == subject_id)
        if only_shipment is not None:
            about = about.where(access_records.c.shipment_id == only_shipment)
        access_rows = list(
            connection.execute(about.order_by(access_records.c.at, access_records.c.id))
        )
        actors = _actors(connection, vault, access_rows)
        corrected = corrections.history(connection, [row.id for row in rows])
    opened, has_key = _opened(vault, subject_id, sealed)
    exported_fields: set[str] = set()
    shipments_out = []
    for row in rows:
        personal = opened.get(row.id, {})
        exported_fields.update(personal)
        events_out = []
        for event in events_by_shipment[row.id]:
            proof = opened.get(event_row_id(event.tenant_id, event.event_id), {})
            exported_fields.update(proof)
            events_out.append(
                {
                    "event_id": event.event_id,
                    "time": _iso(event.occurred_at),
                    "status": event.status,
                    "reason": event.reason,
                    "description": event.description,
                    "location": {
                        "country": event.loc_country,
                        "region": event.loc_region,
                        "city": event.loc_city,
                        "facility": event.loc_facility,
                    },
                    "proof_of_delivery": dict(sorted(proof.items())) if proof else None,
                    "ledger_index": event.ledger_index,
                }
            )
        shipments_out.append(
            {
                "tracking_number": row.tracking_number,
                "tenant": row.tenant_name,
                "reference": row.reference,
                "service": row.service,
                "created_at": _iso(row.created_at),
                "status": row.status,
                "promised_date": row.promised_date.isoformat() if row.promised_date else None,
                "origin": {
                    "country": row.origin_country,
                    "region": row.origin_region,
                    "city": row.origin_city,
                },
                "destination": {
                    "country": row.dest_country,
                    "region": row.dest_region,
                    "city": row.dest_city,
                },
                "personal_data": dict(sorted(personal.items())),
                "removed_under_retention": sorted(
                    name for name in (row.shredded or "").split(",") if name
                ),
                "erased": not has_key,
                "events": events_out,
                "address_corrections": [
                    {
                        "fields": list(c.fields),
                        "source": c.source,
                        "at": _iso(c.at),
                        "ledger_index": c.ledger_index,
                    }
                    for c in corrected.get(row.id, [])
                ],
            }
        )
    export = {
        "schema": SCHEMA,
        "generated_at": now.isoformat(),
        "erased": not has_key,
        "shipments": shipments_out,
        "consents": [
            {
                "purpose": c.purpose,
                "granted": c.granted,
                "notice_version": c.notice_version,
                "source": c.source,
                "at": _iso(c.at),
                "ledger_index": c.ledger_index,
            }
            for c in consent_rows
        ],
        "access_records": [
            {
                "at": _iso(a.at),
                "tier": a.tier,
                "who": actors[a.actor_kind, a.actor_id or ""],
                "fields": [f for f in a.fields.split(",") if f],
                "purpose": a.purpose,
                "reason": a.reason,
                "ledger_index": a.ledger_index,
            }
            for a in access_rows
        ],
        "field_labels": {name: rule.label for name, rule in sorted(vault.policy.fields.items())},
    }
    if requested_by != "subject" and exported_fields:
        _record_operator_export(vault, rows, subject_id, requested_by, exported_fields, now)
    return export


def _record_operator_export(
    vault: Vault,
    rows: Sequence[AnyRow],
    subject_id: str,
    requested_by: str,
    fields: set[str],
    now: datetime,
) -> None:
    operator = requested_by.removeprefix("operator:")[:64] or "operator"
    with vault.writing(), vault.engine.begin() as connection:
        for row in rows:
            store.insert_access(
                connection,
                AccessRecord(
                    at=now,
                    shipment_id=row.id,
                    subject_id=subject_id,
                    tier=OPERATOR_TIER,
                    actor_kind="operator",
                    actor_id=operator,
                    fields=tuple(sorted(fields)),
                    purpose=SUBJECT_REQUEST,
                    reason="subject_request",
                    reference=None,
                ),
            )


_environment: Environment | None = None


def render_html(export: dict[str, Any]) -> str:
    """The export as one self-contained page (no scripts, no external resources)."""
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"])
        )
    return _environment.get_template("export.html").render(export=export)
