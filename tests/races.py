"""Helpers for tests that put a concurrent change between a view's read and its record."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from parcelvault.adapters.db.tables import shipments
from parcelvault.services import erasure, tracking
from parcelvault.services.vault import Vault


def subject_of(vault: Vault, tracking_number: str) -> str:
    with vault.engine.connect() as connection:
        return str(
            connection.execute(
                select(shipments.c.subject_id).where(shipments.c.tracking_number == tracking_number)
            ).scalar_one()
        )


def after_each_assembly(monkeypatch: pytest.MonkeyPatch, then: Callable[[int], None]) -> list[str]:
    """Patch `tracking.assemble` so that `then(n)` runs right after its n-th call
    (counting from 1); returns the tiers of the views assembled, as they are."""
    assemble = tracking.assemble
    tiers: list[str] = []

    def assembled_then(**kwargs: Any) -> Any:
        built = assemble(**kwargs)
        tiers.append(built[0].tier)
        then(len(tiers))
        return built

    monkeypatch.setattr(tracking, "assemble", assembled_then)
    return tiers


class ErasureMeanwhile:
    """Starts erasing `subject` in another thread right after the first view is
    assembled, and notes whether the erasure was still waiting 0.3 s later."""

    def __init__(self, vault: Vault, subject: str) -> None:
        self.vault = vault
        self.subject = subject
        self.still_waiting: list[bool] = []
        self._threads: list[threading.Thread] = []

    def __call__(self, assembled: int) -> None:
        if assembled != 1:
            return
        erase = threading.Thread(
            target=erasure.erase_subject,
            kwargs={"vault": self.vault, "subject_id": self.subject, "requested_by": "subject"},
        )
        erase.start()
        erase.join(0.3)
        self.still_waiting.append(erase.is_alive())
        self._threads.append(erase)

    def join(self) -> None:
        for erase in self._threads:
            erase.join(10)


def erasure_during_the_first_view(
    monkeypatch: pytest.MonkeyPatch, vault: Vault, tracking_number: str
) -> ErasureMeanwhile:
    """Erase the shipment's recipient from another thread right after its first view
    is assembled (see `ErasureMeanwhile`)."""
    meanwhile = ErasureMeanwhile(vault, subject_of(vault, tracking_number))
    after_each_assembly(monkeypatch, meanwhile)
    return meanwhile
