from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer, shipment_payload


def test_a_created_shipment_can_be_tracked_publicly(
    any_client: TestClient, any_shop_key: str
) -> None:
    created = any_client.post(
        "/api/v1/shipments", json=shipment_payload(), headers=bearer(any_shop_key)
    )
    assert created.status_code == 201
    number = created.json()["tracking_number"]
    public = any_client.get(f"/api/v1/track/{number}")
    assert public.status_code == 200
    assert public.json()["recipient"] == {"name": "J. D."}
