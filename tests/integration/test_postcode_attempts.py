"""Postcode verification under concurrent attempts: the limit of wrong postcodes holds
however many arrive at the same moment."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from parcelvault.crypto import keyed_hash
from parcelvault.services import tracking
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload

WRONG = "ZZ9 9ZZ"


def test_attempts_sent_together_after_the_fourth_wrong_postcode_get_one_comparison(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = any_client.post(
        "/api/v1/shipments", json=shipment_payload(), headers=bearer(any_shop_key)
    )
    number = created.json()["tracking_number"]
    limit = any_vault.settings.verify_max_failures
    for _ in range(limit - 1):
        with pytest.raises(tracking.WrongPostcode):
            tracking.verify_postcode(vault=any_vault, raw_number=number, postcode=WRONG)

    compare = keyed_hash.digests_match
    comparisons: list[bool] = []
    first_comparing = threading.Event()
    second_done = threading.Event()

    def pausing_in_the_first_comparison(stored: bytes, candidate: bytes) -> bool:
        comparisons.append(True)
        if len(comparisons) == 1:
            first_comparing.set()
            second_done.wait(0.5)  # the second attempt runs now, unless it must wait
        return compare(stored, candidate)

    monkeypatch.setattr(keyed_hash, "digests_match", pausing_in_the_first_comparison)
    outcomes: dict[str, BaseException] = {}

    def attempt(name: str, done: threading.Event | None = None) -> None:
        try:
            tracking.verify_postcode(vault=any_vault, raw_number=number, postcode=WRONG)
        except (tracking.WrongPostcode, tracking.Locked) as exc:
            outcomes[name] = exc
        finally:
            if done is not None:
                done.set()

    first = threading.Thread(target=attempt, args=("first",))
    first.start()
    assert first_comparing.wait(5)
    second = threading.Thread(target=attempt, args=("second", second_done))
    second.start()
    first.join(10)
    second.join(10)

    assert len(comparisons) == 1
    assert isinstance(outcomes["first"], tracking.Locked)
    assert isinstance(outcomes["second"], tracking.Locked)
    state = tracking.verification_state(vault=any_vault, raw_number=number)
    assert state.recent_failures == limit
