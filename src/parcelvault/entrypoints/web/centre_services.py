"""The subject-rights use cases as the privacy centre calls them: every change it
makes is recorded with source `privacy_centre`, every request as the subject's own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcelvault.services import consent, corrections, erasure, export
from parcelvault.services.consent import Consent
from parcelvault.services.corrections import Correction
from parcelvault.services.erasure import ErasureReceipt
from parcelvault.services.vault import Vault

SOURCE = "privacy_centre"
REQUESTED_BY = "subject"
PURPOSES = consent.PURPOSES
PURPOSE_LABELS = consent.PURPOSE_LABELS


def current_consents(connection: Connection, subject_id: str) -> dict[str, Consent]:
    return consent.current(connection, subject_id)


def notice_version(vault: Vault) -> str:
    """The version of the privacy notice (/privacy) a consent given now refers to."""
    return consent.current_notice_version(vault.policy)


def set_consent(
    *, vault: Vault, subject_id: str, purpose: str, granted: bool, shipment_id: str | None
) -> None:
    consent.set_consent(
        vault=vault,
        subject_id=subject_id,
        purpose=purpose,
        granted=granted,
        notice_version=notice_version(vault),
        source=SOURCE,
        shipment_id=shipment_id,
    )


def correct_address(*, vault: Vault, shipment_id: str, changes: dict[str, str]) -> Correction:
    return corrections.correct_address(
        vault=vault, shipment_id=shipment_id, changes=changes, source=SOURCE
    )


def correctable_fields(vault: Vault) -> set[str]:
    return corrections.correctable_fields(vault)


def export_subject(*, vault: Vault, subject_id: str, only_shipment: str | None) -> dict[str, Any]:
    return export.export_subject(
        vault=vault, subject_id=subject_id, requested_by=REQUESTED_BY, only_shipment=only_shipment
    )


def render_export_html(data: dict[str, Any]) -> str:
    return export.render_html(data)


def erase_subject(*, vault: Vault, subject_id: str) -> ErasureReceipt:
    """Raises `holds.UnderHold` (a Conflict naming the legal holds) when a hold blocks it,
    NotFound when the subject is already erased."""
    return erasure.erase_subject(vault=vault, subject_id=subject_id, requested_by=REQUESTED_BY)


def receipt_details(*, vault: Vault, receipt_id: str) -> dict[str, Any]:
    return erasure.receipt_details(vault=vault, receipt_id=receipt_id)
