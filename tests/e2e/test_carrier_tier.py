"""The carrier tier over HTTP: a merchant names the tenant that carries a shipment;
that tenant posts its events and reads what delivery needs, and nothing of any
other shipment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from parcelvault.adapters.db import store
from parcelvault.adapters.db.tables import access_records, events, shipments
from parcelvault.entrypoints.api import schemas
from parcelvault.services import tenants
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, shipment_payload

CARRIER = "fast-couriers"
CARRIER_SCOPES = ("events:write", "shipments:read")


def hours_ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def an_event(event_id: str, status: str = "in_transit", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "time": hours_ago(1), "status": status, **extra}


def create(client: TestClient, key: str, body: dict[str, Any] | None = None) -> str:
    response = client.post(
        "/api/v1/shipments", json=body or shipment_payload(carrier=CARRIER), headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    number: str = response.json()["tracking_number"]
    return number


def count(vault: Vault, table: Any) -> int:
    with vault.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def tenant_id(vault: Vault, name: str) -> int:
    with vault.engine.connect() as connection:
        row = store.tenant_by_name(connection, name)
    assert row is not None
    return int(row.id)


def carrier_key(vault: Vault, name: str = CARRIER, scopes: tuple[str, ...] = CARRIER_SCOPES) -> str:
    return tenants.create_tenant(vault=vault, name=name, scopes=scopes)


# --- naming the carrier ----------------------------------------------------------------


def test_the_carrier_reads_an_assigned_shipment_at_the_carrier_tier(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    key = carrier_key(any_vault)
    body = shipment_payload(carrier=CARRIER)
    body["destination"]["notes"] = "Side door, ring twice"
    number = create(any_client, any_shop_key, body)

    response = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(key))

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    view = response.json()
    assert view["tier"] == "carrier"
    assert view["tenant"] == "shop-a"
    assert view["reference"] is None
    assert view["recipient"] == {"name": "Jane Doe", "phone": "+44 7700 900123"}
    assert view["destination"]["street"] == ["12 Example Street"]
    assert view["destination"]["postcode"] == "LS1 4AP"
    assert view["destination"]["notes"] == "Side door, ring twice"
    assert view["origin"]["postcode"] == "E1 6AN"


def test_the_owner_still_reads_its_shipment_at_the_merchant_tier(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    carrier_key(vault)
    number = create(client, shop_key)

    view = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()

    assert view["tier"] == "merchant"
    assert view["recipient"]["email"] == "jane@example.org"
    assert view["reference"] == "order-1001"


def test_a_carrier_view_matches_the_documented_model(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    key = carrier_key(vault)
    number = create(client, shop_key)

    view = client.get(f"/api/v1/shipments/{number}", headers=bearer(key)).json()

    assert schemas.TrackingOut.model_validate(view).tier == "carrier"


def test_an_unknown_carrier_is_a_problem_on_the_carrier_field_and_nothing_is_written(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    response = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(carrier="no-such-carrier"),
        headers=bearer(any_shop_key),
    )

    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["carrier"], "message": "no tenant has this name"}]
    assert count(any_vault, shipments) == 0


def test_a_merchant_cannot_name_itself_as_carrier(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(carrier="shop-a"), headers=bearer(shop_key)
    )

    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [["carrier"]]
    assert count(vault, shipments) == 0


def test_every_problem_of_a_shipment_is_listed_with_the_carrier_one(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    body = shipment_payload(carrier="no-such-carrier", tracking_number="!!!!")

    response = client.post("/api/v1/shipments", json=body, headers=bearer(shop_key))

    assert response.status_code == 422
    assert sorted(e["loc"][0] for e in response.json()["errors"]) == [
        "carrier",
        "tracking_number",
    ]
    assert count(vault, shipments) == 0


# --- events from the carrier -------------------------------------------------------------


def test_the_carrier_posts_single_and_batch_events_that_move_the_status(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    key = carrier_key(any_vault)
    number = create(any_client, any_shop_key)

    single = any_client.post(
        f"/api/v1/shipments/{number}/events", json=an_event("fc-1"), headers=bearer(key)
    )
    batch = any_client.post(
        "/api/v1/events/batch",
        json={"events": [{**an_event("fc-2", "delivered"), "tracking_number": number}]},
        headers=bearer(key),
    )

    assert single.status_code == 201, single.text
    assert batch.status_code == 200, batch.text
    assert batch.json() == {"accepted": 1, "duplicates": 0}
    public = any_client.get(f"/api/v1/track/{number}").json()
    assert public["status"] == "delivered"
    assert len(public["events"]) == 2


def test_event_ids_are_unique_per_posting_tenant(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    key = carrier_key(any_vault)
    number = create(any_client, any_shop_key)
    path = f"/api/v1/shipments/{number}/events"

    by_merchant = any_client.post(path, json=an_event("scan-1"), headers=bearer(any_shop_key))
    by_carrier = any_client.post(path, json=an_event("scan-1"), headers=bearer(key))
    replayed = any_client.post(path, json=an_event("scan-1"), headers=bearer(key))

    assert (by_merchant.status_code, by_carrier.status_code) == (201, 201)
    assert replayed.status_code == 200
    assert replayed.json() == {"accepted": 0, "duplicates": 1}
    assert count(any_vault, events) == 2


def test_a_carrier_proof_of_delivery_is_shown_to_the_merchant_and_the_carrier(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    key = carrier_key(vault)
    number = create(client, shop_key)
    proof = {"received_by": "Neighbour at 14", "geo": {"lat": 53.799712, "lon": -1.549234}}
    posted = client.post(
        f"/api/v1/shipments/{number}/events",
        json=an_event("pod", "delivered", proof=proof),
        headers=bearer(key),
    )
    assert posted.status_code == 201, posted.text

    merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()
    carrier = client.get(f"/api/v1/shipments/{number}", headers=bearer(key)).json()

    assert merchant["events"][0]["proof"] == {
        "received_by": "Neighbour at 14",
        "geo": "53.80,-1.55",
    }
    assert carrier["events"][0]["proof"] == {
        "received_by": "Neighbour at 14",
        "geo": "53.799712,-1.549234",
    }


def test_a_carrier_without_the_scopes_is_forbidden(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    read_only = carrier_key(vault, scopes=("shipments:read",))
    write_only = tenants.issue_key(vault=vault, name=CARRIER, scopes=("events:write",))
    number = create(client, shop_key)

    post = client.post(
        f"/api/v1/shipments/{number}/events", json=an_event("x"), headers=bearer(read_only)
    )
    get = client.get(f"/api/v1/shipments/{number}", headers=bearer(write_only))

    assert (post.status_code, get.status_code) == (403, 403)
    assert count(vault, events) == 0


# --- the walls ---------------------------------------------------------------------------


def test_a_carrier_sees_nothing_of_a_shipment_not_assigned_to_it(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    carrier_key(any_vault)
    other = carrier_key(any_vault, "slow-couriers")
    number = create(any_client, any_shop_key)
    never = "NOSUCH0001"

    reads = [
        any_client.get(f"/api/v1/shipments/{n}", headers=bearer(other)) for n in (number, never)
    ]
    posts = [
        any_client.post(
            f"/api/v1/shipments/{n}/events", json=an_event(f"e-{n}"), headers=bearer(other)
        )
        for n in (number, never)
    ]
    batch = any_client.post(
        "/api/v1/events/batch",
        json={
            "events": [
                {**an_event("b-1"), "tracking_number": number},
                {**an_event("b-2"), "tracking_number": never},
            ]
        },
        headers=bearer(other),
    )

    assert [r.status_code for r in reads + posts] == [404, 404, 404, 404]
    assert reads[0].content == reads[1].content
    assert posts[0].content == posts[1].content
    assert batch.status_code == 422
    first, second = batch.json()["errors"]
    assert first["message"] == second["message"] == "no shipment of yours has this number"
    assert count(any_vault, events) == 0


def test_another_merchant_cannot_reach_a_shipment_through_its_carrier(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    carrier_key(any_vault)
    shop_b = tenants.create_tenant(vault=any_vault, name="shop-b")
    number = create(any_client, any_shop_key)
    create(any_client, shop_b)

    read = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_b))
    never = any_client.get("/api/v1/shipments/NOSUCH0001", headers=bearer(shop_b))
    post = any_client.post(
        f"/api/v1/shipments/{number}/events", json=an_event("b"), headers=bearer(shop_b)
    )

    assert (read.status_code, post.status_code) == (404, 404)
    assert read.content == never.content
    assert count(any_vault, events) == 0


def test_a_carrier_cannot_read_a_shipment_after_a_merchant_names_another_carrier(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    fast = carrier_key(vault)
    carrier_key(vault, "slow-couriers")
    mine = create(client, shop_key)
    theirs = create(client, shop_key, shipment_payload(carrier="slow-couriers"))

    assert client.get(f"/api/v1/shipments/{mine}", headers=bearer(fast)).status_code == 200
    assert client.get(f"/api/v1/shipments/{theirs}", headers=bearer(fast)).status_code == 404


def test_a_tenant_that_owns_a_number_a_carried_shipment_shares_gets_its_own(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    key = carrier_key(vault, scopes=("shipments:write", "events:write", "shipments:read"))
    own = create(client, key, shipment_payload(tracking_number="ORDER-12345"))
    carried = create(
        client, shop_key, shipment_payload(tracking_number="ORDER-12345", carrier=CARRIER)
    )
    assert own == carried == "ORDER12345"

    view = client.get("/api/v1/shipments/ORDER12345", headers=bearer(key)).json()
    posted = client.post(
        "/api/v1/shipments/ORDER12345/events", json=an_event("mine"), headers=bearer(key)
    )

    assert view["tier"] == "merchant"
    assert view["tenant"] == CARRIER
    assert posted.status_code == 201
    merchant = client.get("/api/v1/shipments/ORDER12345", headers=bearer(shop_key)).json()
    assert merchant["events"] == []


def test_a_number_two_carried_shipments_share_reaches_neither(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    key = carrier_key(vault)
    shop_b = tenants.create_tenant(vault=vault, name="shop-b")
    for merchant in (shop_key, shop_b):
        create(client, merchant, shipment_payload(tracking_number="ORDER-777", carrier=CARRIER))

    read = client.get("/api/v1/shipments/ORDER777", headers=bearer(key))
    batch = client.post(
        "/api/v1/events/batch",
        json={"events": [{**an_event("s"), "tracking_number": "ORDER777"}]},
        headers=bearer(key),
    )

    assert read.status_code == 404
    assert batch.status_code == 422
    assert "several shipments" in batch.json()["errors"][0]["message"]
    assert count(vault, events) == 0


# --- access records and canaries -----------------------------------------------------------


def test_a_carrier_read_of_personal_fields_leaves_an_access_record_naming_the_carrier(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    key = carrier_key(any_vault)
    number = create(any_client, any_shop_key)
    with any_vault.engine.connect() as connection:
        shipment_id = connection.execute(select(shipments.c.id)).scalar_one()
    before = count(any_vault, access_records)

    any_client.get(f"/api/v1/shipments/{number}", headers=bearer(key))

    assert count(any_vault, access_records) == before + 1
    with any_vault.engine.connect() as connection:
        (latest,) = store.accesses_of_shipment(connection, shipment_id)[:1]
    assert latest.tier == "carrier"
    assert latest.actor_kind == "tenant"
    assert latest.actor_id == str(tenant_id(any_vault, CARRIER))
    assert latest.fields.split(",") == [
        "destination.postcode",
        "destination.street",
        "origin.postcode",
        "recipient.name",
        "recipient.phone",
    ]


def test_refused_carrier_reads_leave_no_access_record(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    carrier_key(vault)
    other = carrier_key(vault, "slow-couriers")
    number = create(client, shop_key)
    before = count(vault, access_records)

    refused = client.get(f"/api/v1/shipments/{number}", headers=bearer(other))

    assert refused.status_code == 404
    assert count(vault, access_records) == before


def planted(client: TestClient, shop_key: str, carrier: str, canaries: Canaries) -> str:
    number = create(client, shop_key, canaries.shipment(carrier=CARRIER))
    delivered = an_event(
        "pod",
        "delivered",
        proof={"received_by": canaries.received_by, "signature": canaries.signature},
    )
    posted = client.post(
        f"/api/v1/shipments/{number}/events", json=delivered, headers=bearer(carrier)
    )
    assert posted.status_code == 201, posted.text
    return number


def test_the_carrier_sees_every_canary_but_the_email(
    client: TestClient, shop_key: str, vault: Vault, canaries: Canaries
) -> None:
    key = carrier_key(vault)
    number = planted(client, shop_key, key, canaries)

    carrier = client.get(f"/api/v1/shipments/{number}", headers=bearer(key))
    merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key))

    everything = sorted(canaries.values())
    assert sorted(canaries.found_in(merchant.content)) == everything
    assert sorted(canaries.found_in(carrier.content)) == sorted(set(everything) - {"email"})


def test_no_canary_appears_in_what_other_tenants_get_back(
    client: TestClient, shop_key: str, vault: Vault, canaries: Canaries
) -> None:
    key = carrier_key(vault)
    other = carrier_key(vault, "slow-couriers")
    number = planted(client, shop_key, key, canaries)
    proof = {"received_by": canaries.received_by, "signature": canaries.signature}

    answers = [
        client.get(f"/api/v1/shipments/{number}", headers=bearer(other)),
        client.post(
            f"/api/v1/shipments/{number}/events",
            json=an_event("x", "delivered", proof=proof),
            headers=bearer(other),
        ),
        client.post(
            "/api/v1/events/batch",
            json={"events": [{**an_event("y", proof=proof), "tracking_number": number}]},
            headers=bearer(other),
        ),
        client.post(
            "/api/v1/shipments",
            json=canaries.shipment(carrier="no-such-carrier"),
            headers=bearer(shop_key),
        ),
        client.post(
            "/api/v1/shipments",
            json=canaries.shipment(carrier=canaries.name),
            headers=bearer(shop_key),
        ),
    ]

    assert [a.status_code for a in answers] == [404, 404, 422, 422, 422]
    for answer in answers:
        assert canaries.found_in(answer.content) == [], answer.text
