"""Helpers for tests that run a competing action at a chosen moment inside the code
under test (between a check and the write that depends on it, between a view and its
record) and see whether it had to wait."""

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


class Meanwhile:
    """Runs `action` in another thread when `start` is called (from inside the code
    under test) and lets that code go on after `patience` seconds at the most, noting
    whether the action was still running then: it had to wait for a lock the code under
    test holds. `outcome` gets what the action returned or raised."""

    def __init__(self, action: Callable[[], object], patience: float = 0.5) -> None:
        self._action = action
        self._patience = patience
        self._threads: list[threading.Thread] = []
        self.still_waiting: list[bool] = []
        self.outcome: list[object] = []

    def start(self) -> None:
        def run() -> None:
            try:
                self.outcome.append(self._action())
            except Exception as exc:
                self.outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(self._patience)
        self.still_waiting.append(thread.is_alive())
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(15)


def after_first_call(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, meanwhile: Meanwhile
) -> list[bool]:
    """Patch `target.name` so that `meanwhile` starts right after its first call
    returns; the list gets an entry for every call, the competing action's included."""
    original = getattr(target, name)
    calls: list[bool] = []

    def then_meanwhile(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls.append(True)
        if len(calls) == 1:
            meanwhile.start()
        return result

    monkeypatch.setattr(target, name, then_meanwhile)
    return calls


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


def erasure_during_the_first_view(
    monkeypatch: pytest.MonkeyPatch, vault: Vault, tracking_number: str
) -> Meanwhile:
    """Erase the shipment's recipient from another thread right after its first view
    is assembled, letting the view go on after 0.3 s at the most."""
    subject = subject_of(vault, tracking_number)
    meanwhile = Meanwhile(
        lambda: erasure.erase_subject(vault=vault, subject_id=subject, requested_by="subject"),
        patience=0.3,
    )
    after_first_call(monkeypatch, tracking, "assemble", meanwhile)
    return meanwhile
