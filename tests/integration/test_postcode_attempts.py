"""Postcode verification under concurrent attempts: the limit of wrong postcodes holds
however many arrive at the same moment."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from parcelvault.crypto import keyed_hash
from parcelvault.services import tracking
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload
from tests.races import Meanwhile, after_first_call

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

    second = Meanwhile(
        lambda: tracking.verify_postcode(vault=any_vault, raw_number=number, postcode=WRONG)
    )
    comparisons = after_first_call(monkeypatch, keyed_hash, "digests_match", second)
    with pytest.raises(tracking.Locked):
        tracking.verify_postcode(vault=any_vault, raw_number=number, postcode=WRONG)
    second.join()

    assert len(comparisons) == 1
    assert isinstance(second.outcome[0], tracking.Locked)
    state = tracking.verification_state(vault=any_vault, raw_number=number)
    assert state.recent_failures == limit
