"""The subject-rights use cases the privacy centre calls: consent, address
corrections, export and erasure.

Consent and corrections are looked up when first used; while one is not part of the
installed version, its section of the centre says so instead of failing
(`Unavailable`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from sqlalchemy import Connection

from parcelvault.services import erasure, export
from parcelvault.services.erasure import ErasureReceipt
from parcelvault.services.vault import Vault

PURPOSES: tuple[str, ...] = ("notify_email", "notify_sms", "share_live_location", "analytics")
SOURCE = "privacy_centre"
REQUESTED_BY = "subject"


class Unavailable(RuntimeError):
    """The use case is not part of this version."""


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"parcelvault.services.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"parcelvault.services.{name}":
            raise
        raise Unavailable(name) from exc


def available(name: str) -> bool:
    try:
        _module(name)
    except Unavailable:
        return False
    return True


def purposes() -> tuple[str, ...]:
    try:
        found = getattr(_module("consent"), "PURPOSES", PURPOSES)
    except Unavailable:
        return PURPOSES
    return tuple(str(p) for p in found)


def current_consents(connection: Connection, subject_id: str) -> Mapping[str, Any]:
    found: Mapping[str, Any] = _module("consent").current(connection, subject_id)
    return found


def notice_version(vault: Vault) -> str:
    """The version of the privacy notice (/privacy) a consent given now refers to."""
    try:
        declared = getattr(_module("consent"), "NOTICE_VERSION", None)
    except Unavailable:
        declared = None
    if declared:
        return str(declared)
    return f"{vault.policy.version}-{vault.policy.digest[:12]}" if vault.policy.digest else "1"


def set_consent(
    *, vault: Vault, subject_id: str, purpose: str, granted: bool, shipment_id: str | None
) -> None:
    _module("consent").set_consent(
        vault=vault,
        subject_id=subject_id,
        purpose=purpose,
        granted=granted,
        notice_version=notice_version(vault),
        source=SOURCE,
        shipment_id=shipment_id,
    )


def correct_address(*, vault: Vault, shipment_id: str, changes: dict[str, str]) -> None:
    _module("corrections").correct_address(
        vault=vault, shipment_id=shipment_id, changes=changes, source=SOURCE
    )


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
