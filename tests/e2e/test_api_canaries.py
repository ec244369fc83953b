"""Canary scans: unique personal values are planted through the API, then every
public answer, every error body and every log record is searched for them. The
recipient view must show them, which proves the search would find a leak."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from parcelvault.entrypoints.api.app import create_app
from parcelvault.services import operations
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, shipment_payload


def hours_ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def delivery(
    canaries: Canaries, event_id: str, tracking_number: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "time": hours_ago(1),
        "status": "delivered",
        "location": {"country": "GB", "city": "Leeds"},
        "proof": {
            "received_by": canaries.received_by,
            "signature": canaries.signature,
            "photo": "pod/1.jpg",
            "geo": {"lat": 53.8, "lon": -1.55},
        },
    }
    if tracking_number is not None:
        body["tracking_number"] = tracking_number
    return body


def planted(client: TestClient, key: str, canaries: Canaries) -> str:
    created = client.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    number: str = created.json()["tracking_number"]
    attempt = {
        "event_id": "attempt",
        "time": hours_ago(3),
        "status": "failed_attempt",
        "reason": "recipient_absent",
    }
    for body in (attempt, delivery(canaries, "pod")):
        response = client.post(f"/api/v1/shipments/{number}/events", json=body, headers=bearer(key))
        assert response.status_code == 201, response.text
    return number


def verified_cookie(client: TestClient, number: str, postcode: str) -> str:
    response = client.post(f"/api/v1/track/{number}/verify", json={"postcode": postcode})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    (header,) = response.headers.get_list("set-cookie")
    return header.split(";", 1)[0]


def public_answers(client: TestClient, number: str, canaries: Canaries) -> list[Response]:
    """Every answer someone without the postcode can get about the shipment."""
    api = client.get(f"/api/v1/track/{number}")
    etag = api.headers["etag"]
    lower = number.lower()
    return [
        api,
        client.get(f"/api/v1/track/{lower}"),
        client.get(f"/api/v1/track/{number}", headers={"If-None-Match": etag}),
        client.get(f"/t/{number}"),
        client.get(f"/t?number={lower}", follow_redirects=True),
        client.post(f"/api/v1/track/{number}/verify", json={"postcode": "ZZ9 9ZZ"}),
        client.post(f"/t/{number}/verify", data={"postcode": "ZZ9 9ZZ"}),
        client.get(f"/api/v1/track/{number}", headers={"Cookie": "pvr_0000000000000000=forged"}),
    ]


def error_answers(client: TestClient, key: str, number: str, canaries: Canaries) -> list[Response]:
    """Rejected requests that carry the canary values, each for a different reason."""
    bad_country = canaries.shipment(
        origin={"country": "Britain", "city": "London", "postcode": canaries.postcode}
    )
    as_wrong_fields = shipment_payload(
        destination={
            "country": "GB",
            "city": "Leeds",
            "postcode": canaries.street,
            "street": [canaries.street],
        },
        recipient={"name": canaries.name, "email": canaries.name, "phone": canaries.email},
    )
    bad_item = {**delivery(canaries, "bad-item", number), "status": "teleported"}
    rule_breaker = {**delivery(canaries, "rule-breaker", number), "reason": "weather"}
    late = {**delivery(canaries, "late", number), "time": hours_ago(-2)}
    return [
        client.post("/api/v1/shipments", json=bad_country, headers=bearer(key)),
        client.post("/api/v1/shipments", json=as_wrong_fields, headers=bearer(key)),
        client.post(
            "/api/v1/shipments",
            json=canaries.shipment(tracking_number=number),
            headers=bearer(key),
        ),
        client.post("/api/v1/shipments", json=canaries.shipment()),
        client.post(
            "/api/v1/shipments",
            content=str(canaries.shipment()).encode(),
            headers={**bearer(key), "Content-Type": "application/json"},
        ),
        client.post(
            "/api/v1/shipments",
            content=str(canaries.shipment()).replace("'", '"').encode(),
            headers={**bearer(key), "Content-Type": "text/plain"},
        ),
        client.post(
            "/api/v1/events/batch",
            json={"events": [bad_item, rule_breaker, late]},
            headers=bearer(key),
        ),
        client.post(
            f"/api/v1/shipments/{number}/events",
            json={k: v for k, v in bad_item.items() if k != "tracking_number"},
            headers=bearer(key),
        ),
        client.post(
            "/api/v1/shipments/NOSUCH0001/events",
            json=delivery(canaries, "nowhere"),
            headers=bearer(key),
        ),
        client.post(f"/api/v1/track/{number}/verify", json={"postcode": canaries.street}),
    ]


def test_no_canary_appears_in_any_public_answer(
    client: TestClient, shop_key: str, canaries: Canaries
) -> None:
    number = planted(client, shop_key, canaries)

    answers = public_answers(client, number, canaries)

    assert [a.status_code for a in answers] == [200, 200, 304, 200, 200, 403, 403, 200]
    for answer in answers:
        assert canaries.found_in(answer.content) == [], answer.request.url
        assert canaries.found_in(str(answer.headers)) == [], answer.request.url
    assert answers[0].json()["recipient"] == {"name": "Z. C."}


def test_no_canary_appears_in_any_error_body(
    client: TestClient, shop_key: str, canaries: Canaries
) -> None:
    number = planted(client, shop_key, canaries)

    answers = error_answers(client, shop_key, number, canaries)

    assert all(400 <= a.status_code < 500 for a in answers), [a.status_code for a in answers]
    batch = answers[6].json()
    assert [e["loc"] for e in batch["errors"]] == [
        ["events", 0, "status"],
        ["events", 1, "reason"],
        ["events", 2, "time"],
    ]
    for answer in answers:
        assert canaries.found_in(answer.content) == [], (answer.request.url, answer.text)
        assert canaries.found_in(str(answer.headers)) == [], answer.request.url


def test_the_recipient_and_the_merchant_see_every_canary(
    client: TestClient, shop_key: str, canaries: Canaries
) -> None:
    number = planted(client, shop_key, canaries)
    cookie = verified_cookie(client, number, canaries.postcode.lower())

    recipient = client.get(f"/api/v1/track/{number}", headers={"Cookie": cookie})
    page = client.get(f"/t/{number}", headers={"Cookie": cookie})
    merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key))

    everything = sorted(canaries.values())
    assert recipient.json()["tier"] == "recipient"
    assert sorted(canaries.found_in(recipient.content)) == everything
    assert sorted(canaries.found_in(merchant.content)) == everything
    assert sorted(canaries.found_in(page.content)) == everything


def test_no_canary_reaches_the_logs_even_at_debug_level(
    any_client: TestClient, any_shop_key: str, canaries: Canaries, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")

    number = planted(any_client, any_shop_key, canaries)
    public_answers(any_client, number, canaries)
    error_answers(any_client, any_shop_key, number, canaries)
    cookie = verified_cookie(any_client, number, canaries.postcode)
    any_client.get(f"/api/v1/track/{number}", headers={"Cookie": cookie})
    any_client.get(f"/t/{number}", headers={"Cookie": cookie})
    any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
    any_client.post(
        "/api/v1/events/batch",
        json={"events": [delivery(canaries, "batch-pod", number)]},
        headers=bearer(any_shop_key),
    )

    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records), "no SQL logged"
    assert canaries.found_in(caplog.text) == []
    for record in caplog.records:
        assert canaries.found_in(repr(record.__dict__)) == [], record.name


def test_an_unexpected_error_quoting_input_is_logged_and_answered_without_it(
    vault: Vault,
    shop_key: str,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(**_: Any) -> Any:
        raise ValueError(f"could not store {canaries.received_by} at {canaries.street}")

    monkeypatch.setattr(operations, "ingest_events", failing)
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(vault=vault), raise_server_exceptions=False) as client:
        created = client.post(
            "/api/v1/shipments", json=canaries.shipment(), headers=bearer(shop_key)
        )
        number = created.json()["tracking_number"]
        response = client.post(
            f"/api/v1/shipments/{number}/events",
            json=delivery(canaries, "boom"),
            headers=bearer(shop_key),
        )

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert canaries.found_in(response.content) == []
    unhandled = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert unhandled, "the failure was not logged"
    assert canaries.found_in(caplog.text) == []
    for record in caplog.records:
        assert canaries.found_in(repr(record.__dict__)) == [], record.name
