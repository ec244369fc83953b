from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from parcelvault.adapters.db.tables import access_records
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload


def _records(vault: Vault) -> list[dict[str, object]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(select(access_records).order_by(access_records.c.id)).all()
    return [dict(row._mapping) for row in rows]


def _created(client: TestClient, key: str) -> str:
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(key))
    return str(created.json()["tracking_number"])


def test_a_merchant_read_of_personal_fields_leaves_an_access_record(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    number = _created(any_client, any_shop_key)
    before = len(_records(any_vault))
    read = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
    assert read.status_code == 200
    records = _records(any_vault)
    assert len(records) == before + 1
    latest = records[-1]
    assert latest["tier"] == "merchant"
    assert latest["actor_kind"] == "tenant"
    assert str(latest["fields"]).split(",") == sorted(
        [
            "destination.postcode",
            "destination.street",
            "origin.postcode",
            "recipient.email",
            "recipient.name",
            "recipient.phone",
        ]
    )


def test_every_merchant_read_leaves_its_record_and_sees_the_latest_scan_though_views_are_cached(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    number = _created(any_client, any_shop_key)
    before = len(_records(any_vault))
    reads = [
        any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
        for _ in range(3)
    ]
    assert [read.status_code for read in reads] == [200, 200, 200]
    assert reads[1].json() == reads[0].json()
    assert len(_records(any_vault)) == before + 3
    scan = {"event_id": "cache-1", "time": "2026-11-02T08:00:00+00:00", "status": "in_transit"}
    posted = any_client.post(
        f"/api/v1/shipments/{number}/events", json=scan, headers=bearer(any_shop_key)
    )
    assert posted.status_code == 201, posted.text
    after = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
    assert after.json()["status"] == "in_transit"
    assert len(_records(any_vault)) == before + 4


def test_public_and_recipient_views_leave_no_access_record(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))
    number = created.json()["tracking_number"]
    before = len(_records(vault))
    assert client.get(f"/api/v1/track/{number}").json()["tier"] == "public"
    client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})
    assert client.get(f"/api/v1/track/{number}").json()["tier"] == "recipient"
    assert len(_records(vault)) == before
