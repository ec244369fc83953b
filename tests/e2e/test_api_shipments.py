"""Creating and reading shipments over HTTP: numbers, scopes, authentication, and
the wall between tenants."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from parcelvault.services import tenants
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ISSUED = re.compile(r"^[0-9A-HJKMNP-TV-Z]{17}$")
GROUPED = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}-[0-9A-HJKMNP-TV-Z]$")


def gf32_code_word_holds(number: str) -> bool:
    """The number read as a polynomial over GF(32) (x^5 + x^2 + 1) has alpha as a root,
    written out independently of the code under test with Horner's rule."""

    def times_alpha(value: int) -> int:
        value <<= 1
        return value ^ 0b100101 if value & 0b100000 else value

    total = 0
    for symbol in number:
        total = times_alpha(total) ^ CROCKFORD.index(symbol)
    return total == 0


def create(client: TestClient, key: str, **overrides: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(**overrides), headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def an_event(event_id: str = "scan-1", status: str = "in_transit") -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return {"event_id": event_id, "time": when, "status": status}


# --- issued numbers -----------------------------------------------------------------


def test_a_shipment_without_a_number_gets_an_issued_one_with_a_valid_check_symbol(
    client: TestClient, shop_key: str
) -> None:
    response = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))

    assert response.status_code == 201
    body = response.json()
    number = body["tracking_number"]
    assert ISSUED.match(number)
    assert gf32_code_word_holds(number)
    assert GROUPED.match(body["display_number"])
    assert body["display_number"].replace("-", "") == number
    assert response.headers["location"] == f"/api/v1/shipments/{number}"
    assert response.headers["cache-control"] == "private, no-store"


def test_issued_numbers_differ_from_shipment_to_shipment(client: TestClient, shop_key: str) -> None:
    numbers = {create(client, shop_key)["tracking_number"] for _ in range(20)}

    assert len(numbers) == 20


def test_the_creation_answer_is_the_merchant_view_with_every_detail(
    client: TestClient, shop_key: str
) -> None:
    body = create(client, shop_key, service="express")

    assert body["tier"] == "merchant"
    assert body["tenant"] == "shop-a"
    assert body["reference"] == "order-1001"
    assert body["service"] == "express"
    assert body["status"] == "pending"
    assert body["events"] == []
    assert body["recipient"] == {
        "name": "Jane Doe",
        "email": "jane@example.org",
        "phone": "+44 7700 900123",
    }
    assert body["destination"]["street"] == ["12 Example Street"]
    assert body["destination"]["postcode"] == "LS1 4AP"
    assert body["origin"]["postcode"] == "E1 6AN"
    assert body["promised_date"] == "2026-12-02"


def test_an_issued_number_is_found_however_a_person_types_it(
    client: TestClient, shop_key: str
) -> None:
    created = create(client, shop_key)
    sloppy = created["display_number"].lower().replace("0", "o").replace("1", "l")

    response = client.get(f"/api/v1/shipments/{sloppy}", headers=bearer(shop_key))

    assert response.status_code == 200
    assert response.json()["tracking_number"] == created["tracking_number"]


def test_a_one_symbol_typo_in_an_issued_number_finds_nothing(
    client: TestClient, shop_key: str
) -> None:
    number = create(client, shop_key)["tracking_number"]
    first = CROCKFORD[(CROCKFORD.index(number[0]) + 1) % 32]

    response = client.get(f"/api/v1/shipments/{first}{number[1:]}", headers=bearer(shop_key))

    assert response.status_code == 404


# --- supplied numbers ---------------------------------------------------------------


def test_a_supplied_carrier_number_is_stored_normalized(client: TestClient, shop_key: str) -> None:
    body = create(client, shop_key, tracking_number=" 1z-999 aa1 0123456784 ")

    assert body["tracking_number"] == "1Z999AA10123456784"
    assert body["display_number"] == "1Z999AA10123456784"
    again = client.get("/api/v1/shipments/1z999aa1-0123456784", headers=bearer(shop_key))
    assert again.status_code == 200
    assert again.json()["tracking_number"] == "1Z999AA10123456784"


@pytest.mark.parametrize("number", ["AB#12345", "A" * 41, "ÄBCDE123"])
def test_a_supplied_number_that_is_not_4_to_40_letters_and_digits_is_refused(
    client: TestClient, shop_key: str, number: str
) -> None:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(tracking_number=number), headers=bearer(shop_key)
    )

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["errors"]] == [["tracking_number"]]


def test_a_supplied_number_the_tenant_already_uses_gives_409_and_changes_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    create(any_client, any_shop_key, tracking_number="CARRIER0001", reference="first")

    again = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="carrier-0001", reference="second"),
        headers=bearer(any_shop_key),
    )

    stored = any_client.get("/api/v1/shipments/CARRIER0001", headers=bearer(any_shop_key))
    assert stored.json()["reference"] == "first"
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_a_repeated_supplied_number_is_refused_and_changes_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    create(any_client, any_shop_key, tracking_number="CARRIER0002", reference="first")

    again = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="carrier-0002", reference="second"),
        headers=bearer(any_shop_key),
    )

    assert 400 <= again.status_code < 500
    stored = any_client.get("/api/v1/shipments/CARRIER0002", headers=bearer(any_shop_key))
    assert stored.json()["reference"] == "first"


def test_two_tenants_may_use_the_same_carrier_number(
    any_client: TestClient, any_vault: Vault, any_shop_key: str
) -> None:
    other_key = tenants.create_tenant(vault=any_vault, name="shop-b")
    create(any_client, any_shop_key, tracking_number="SHARED0001", reference="from-a")

    second = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="SHARED0001", reference="from-b"),
        headers=bearer(other_key),
    )

    assert second.status_code == 201
    mine = any_client.get("/api/v1/shipments/SHARED0001", headers=bearer(any_shop_key)).json()
    theirs = any_client.get("/api/v1/shipments/SHARED0001", headers=bearer(other_key)).json()
    assert (mine["tenant"], mine["reference"]) == ("shop-a", "from-a")
    assert (theirs["tenant"], theirs["reference"]) == ("shop-b", "from-b")


def test_every_tenant_sharing_a_carrier_number_can_create_read_and_track_its_shipment(
    any_client: TestClient, any_vault: Vault
) -> None:
    names = ["shop-x", "shop-y", "shop-z"]
    keys = [tenants.create_tenant(vault=any_vault, name=name) for name in names]

    created = [
        any_client.post(
            "/api/v1/shipments",
            json=shipment_payload(tracking_number="SHARED0002"),
            headers=bearer(key),
        ).status_code
        for key in keys
    ]
    read = [
        any_client.get("/api/v1/shipments/SHARED0002", headers=bearer(key)).status_code
        for key in keys
    ]
    tracked = [
        any_client.get(f"/api/v1/track/SHARED0002?tenant={name}").status_code for name in names
    ]

    assert created == [201, 201, 201]
    assert read == [200, 200, 200]
    assert tracked == [200, 200, 200]


def test_creation_lists_every_bad_field_at_once(client: TestClient, shop_key: str) -> None:
    body = shipment_payload(
        origin={"country": "GBR", "city": "London", "postcode": "E1 6AN"},
        destination={"country": "GB", "city": "", "postcode": "LS1 4AP", "street": []},
        recipient={"name": "Jane Doe", "email": "not-an-address"},
        promised_date="tomorrow",
        colour="red",
    )

    response = client.post("/api/v1/shipments", json=body, headers=bearer(shop_key))

    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["errors"]}
    assert locations == {
        ("origin", "country"),
        ("destination", "city"),
        ("destination", "street"),
        ("recipient", "email"),
        ("promised_date",),
        ("colour",),
    }


# --- scopes and authentication --------------------------------------------------------


def test_a_key_without_shipments_write_cannot_create_a_shipment(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    reader = tenants.issue_key(vault=vault, name="shop-a", scopes=("shipments:read",))

    response = client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="NOTMADE01"),
        headers=bearer(reader),
    )

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 403
    missing = client.get("/api/v1/shipments/NOTMADE01", headers=bearer(shop_key))
    assert missing.status_code == 404


def test_a_key_without_shipments_read_cannot_read_a_shipment(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    number = create(client, shop_key)["tracking_number"]
    writer = tenants.issue_key(vault=vault, name="shop-a", scopes=("shipments:write",))

    response = client.get(f"/api/v1/shipments/{number}", headers=bearer(writer))

    assert response.status_code == 403


def test_a_key_without_events_write_cannot_post_events(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    number = create(client, shop_key)["tracking_number"]
    reader = tenants.issue_key(vault=vault, name="shop-a", scopes=("shipments:read",))

    single = client.post(
        f"/api/v1/shipments/{number}/events", json=an_event(), headers=bearer(reader)
    )
    batch = client.post(
        "/api/v1/events/batch",
        json={"events": [{**an_event(), "tracking_number": number}]},
        headers=bearer(reader),
    )

    assert (single.status_code, batch.status_code) == (403, 403)
    view = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()
    assert view["events"] == []


TENANT_CALLS = [
    ("POST", "/api/v1/shipments", shipment_payload()),
    ("GET", "/api/v1/shipments/CARRIER0001", None),
    ("POST", "/api/v1/shipments/CARRIER0001/events", an_event()),
    ("POST", "/api/v1/events/batch", {"events": [{**an_event(), "tracking_number": "X1234"}]}),
]
BAD_CREDENTIALS = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer    "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer pv_not-a-real-key"},
    {"Authorization": "pv_no-scheme"},
]


@pytest.mark.parametrize(("method", "path", "body"), TENANT_CALLS)
@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
def test_a_tenant_call_without_a_valid_bearer_key_gets_401_with_www_authenticate(
    client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    response = client.request(method, path, json=body, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


def test_the_bearer_scheme_is_case_insensitive(client: TestClient, shop_key: str) -> None:
    response = client.post(
        "/api/v1/shipments",
        json=shipment_payload(),
        headers={"Authorization": f"bearer {shop_key}"},
    )

    assert response.status_code == 201


# --- another tenant's shipment -----------------------------------------------------------


@pytest.fixture
def two_tenants(any_client: TestClient, any_vault: Vault, any_shop_key: str) -> tuple[str, str]:
    """(key of shop-a, key of shop-b)."""
    return any_shop_key, tenants.create_tenant(vault=any_vault, name="shop-b")


def test_another_tenants_shipment_reads_exactly_like_one_that_never_existed(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    issued = create(any_client, owner)["tracking_number"]
    create(any_client, owner, tracking_number="CARRIER7777")
    never_issued = "0" * 16 + "0"

    answers = [
        any_client.get(f"/api/v1/shipments/{number}", headers=bearer(stranger))
        for number in (issued, "CARRIER7777", never_issued, "CARRIER8888", "-x-")
    ]

    assert {answer.status_code for answer in answers} == {404}
    assert len({answer.content for answer in answers}) == 1
    assert len({answer.headers["content-length"] for answer in answers}) == 1


def test_another_tenant_cannot_post_an_event_to_a_shipment_and_learns_nothing(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    number = create(any_client, owner)["tracking_number"]

    theirs = any_client.post(
        f"/api/v1/shipments/{number}/events", json=an_event(), headers=bearer(stranger)
    )
    nobodys = any_client.post(
        "/api/v1/shipments/" + "1" * 16 + "Y/events",
        json=an_event(),
        headers=bearer(stranger),
    )

    assert theirs.status_code == 404
    assert theirs.content == nobodys.content
    view = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(owner)).json()
    assert view["events"] == []
    assert view["status"] == "pending"


def test_another_tenants_number_in_a_batch_is_reported_like_an_unknown_number(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    number = create(any_client, owner)["tracking_number"]

    def batch(tracking_number: str) -> bytes:
        response = any_client.post(
            "/api/v1/events/batch",
            json={"events": [{**an_event(), "tracking_number": tracking_number}]},
            headers=bearer(stranger),
        )
        assert response.status_code == 422
        return response.content

    assert batch(number) == batch("NOSUCH0001")
    view = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(owner)).json()
    assert view["events"] == []


def test_event_ids_are_per_tenant_so_a_stranger_cannot_probe_them(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    owners = create(any_client, owner)["tracking_number"]
    strangers = create(any_client, stranger)["tracking_number"]
    first = any_client.post(
        f"/api/v1/shipments/{owners}/events", json=an_event("shared-id"), headers=bearer(owner)
    )

    second = any_client.post(
        f"/api/v1/shipments/{strangers}/events",
        json=an_event("shared-id"),
        headers=bearer(stranger),
    )

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == {"accepted": 1, "duplicates": 0}


def test_another_tenant_cannot_make_an_issued_number_untrackable(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    number = create(any_client, owner)["tracking_number"]

    any_client.post(
        "/api/v1/shipments", json=shipment_payload(tracking_number=number), headers=bearer(stranger)
    )

    assert any_client.get(f"/api/v1/track/{number}").status_code == 200
    assert (
        any_client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"}).status_code
        == 200
    )


def test_a_stranger_creating_the_same_carrier_number_learns_nothing_from_the_answer(
    any_client: TestClient, two_tenants: tuple[str, str]
) -> None:
    owner, stranger = two_tenants
    create(any_client, owner, tracking_number="TAKEN00001")

    taken = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="TAKEN00001"),
        headers=bearer(stranger),
    )
    free = any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="FREE000001"),
        headers=bearer(stranger),
    )

    assert (taken.status_code, free.status_code) == (201, 201)
    assert taken.json()["tenant"] == "shop-b"
    assert taken.json().keys() == free.json().keys()
