"""Public tracking and recipient verification over HTTP: what each tier sees, caching,
the verification cookie, the postcode lockout, the public rate limit, and the OpenAPI
document the responses must match."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.app import create_app
from parcelvault.entrypoints.api.routes import router
from parcelvault.services import tenants
from parcelvault.services.vault import Vault
from parcelvault.settings import Settings
from tests.conftest import bearer, shipment_payload
from tests.e2e.test_ledger_http import LEDGER_ENDPOINTS

RECEIVED_BY = "Mr Receivington"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(vault: Vault) -> Clock:
    vault.clock = Clock()
    return vault.clock


@pytest.fixture
def any_clock(any_vault: Vault) -> Clock:
    any_vault.clock = Clock()
    return any_vault.clock


def create(client: TestClient, key: str, **overrides: Any) -> str:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(**overrides), headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    number: str = response.json()["tracking_number"]
    return number


def deliver(client: TestClient, key: str, number: str) -> None:
    when = datetime.now(UTC) - timedelta(hours=1)
    events = [
        {
            "event_id": f"{number}-1",
            "time": (when - timedelta(hours=5)).isoformat(),
            "status": "in_transit",
            "description": "Sorted at the hub",
            "location": {
                "country": "GB",
                "region": "West Yorkshire",
                "city": "Leeds",
                "facility": "LDS2",
            },
        },
        {
            "event_id": f"{number}-2",
            "time": when.isoformat(),
            "status": "delivered",
            "location": {"country": "GB", "city": "Leeds", "facility": "LDS2"},
            "proof": {
                "received_by": RECEIVED_BY,
                "signature": "sig/8841.png",
                "photo": "pod/8841.jpg",
                "geo": {"lat": 53.799712, "lon": -1.549234},
            },
        },
    ]
    for body in events:
        response = client.post(f"/api/v1/shipments/{number}/events", json=body, headers=bearer(key))
        assert response.status_code == 201, response.text


@pytest.fixture
def delivered(client: TestClient, shop_key: str) -> str:
    number = create(client, shop_key)
    deliver(client, shop_key, number)
    return number


def set_cookie(response: Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def verify(client: TestClient, number: str, postcode: str = "ls1 4ap") -> tuple[str, str]:
    """(cookie name, token) after a successful verification; the client keeps no cookie."""
    response = client.post(f"/api/v1/track/{number}/verify", json={"postcode": postcode})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    (morsel,) = set_cookie(response).values()
    return morsel.key, morsel.value


def track(client: TestClient, number: str, cookie: str | None = None, **headers: str) -> Response:
    if cookie is not None:
        headers["Cookie"] = cookie
    return client.get(f"/api/v1/track/{number}", headers=headers)


# --- the public view --------------------------------------------------------------------


def test_the_public_view_shows_the_parcel_and_only_the_recipients_initials(
    client: TestClient, delivered: str
) -> None:
    response = track(client, delivered)

    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "public"
    assert body["status"] == "delivered"
    assert body["recipient"] == {"name": "J. D."}
    assert set(body["destination"]) == {"country", "region", "city"}
    assert set(body["origin"]) == {"country", "region", "city"}
    assert "tenant" not in body
    assert "reference" not in body
    assert [set(e) for e in body["events"]] == [
        {"time", "status", "label", "reason", "reason_label", "description", "location"}
    ] * 2
    assert [set(e["location"]) for e in body["events"]] == [{"country", "region", "city"}] * 2
    for personal in (
        "Example Street",
        "LS1",
        "4AP",
        "jane",
        "example.org",
        "7700",
        "900123",
        "E1 6AN",
        "Jane Doe",
        RECEIVED_BY,
        "8841",
        "53.79",
        "order-1001",
        "shop-a",
        "LDS2",
    ):
        assert personal.lower() not in response.text.lower(), personal


def test_a_public_view_is_cacheable_and_varies_on_the_cookie(
    client: TestClient, delivered: str
) -> None:
    response = track(client, delivered)

    assert response.headers["cache-control"] == "public, max-age=30"
    assert response.headers["vary"] == "Cookie"
    assert response.headers["etag"].startswith('"')


def test_if_none_match_with_the_current_etag_gives_304_without_a_body(
    client: TestClient, delivered: str
) -> None:
    etag = track(client, delivered).headers["etag"]

    again = track(client, delivered, **{"If-None-Match": etag})
    listed = track(client, delivered, **{"If-None-Match": f'"stale", {etag}'})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "public, max-age=30"
    assert listed.status_code == 304


@pytest.mark.parametrize("form", ["W/{etag}", "*", '"other",W/{etag}'])
def test_if_none_match_uses_the_weak_comparison_so_a_weakened_etag_still_matches(
    client: TestClient, delivered: str, form: str
) -> None:
    etag = track(client, delivered).headers["etag"]

    response = track(client, delivered, **{"If-None-Match": form.format(etag=etag)})

    assert response.status_code == 304


def test_an_etag_of_another_shipment_does_not_match(
    client: TestClient, shop_key: str, delivered: str
) -> None:
    other = create(client, shop_key)
    etag = track(client, other).headers["etag"]

    response = track(client, delivered, **{"If-None-Match": f"{etag}, W/{etag}"})

    assert response.status_code == 200


def test_a_new_event_changes_the_etag_so_a_stale_copy_is_replaced(
    client: TestClient, shop_key: str
) -> None:
    number = create(client, shop_key)
    etag = track(client, number).headers["etag"]
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    client.post(
        f"/api/v1/shipments/{number}/events",
        json={"event_id": "e1", "time": when, "status": "in_transit"},
        headers=bearer(shop_key),
    )

    response = track(client, number, **{"If-None-Match": etag})

    assert response.status_code == 200
    assert response.headers["etag"] != etag
    assert response.json()["status"] == "in_transit"


def test_every_kind_of_miss_gives_the_same_404(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    other_key = tenants.create_tenant(vault=vault, name="shop-b")
    create(client, shop_key, tracking_number="SHARED0001")
    create(client, other_key, tracking_number="SHARED0001")
    issued = create(client, shop_key)

    misses = [
        track(client, "0" * 17),
        track(client, "NOSUCH0001"),
        track(client, "ab"),
        track(client, "%21%21%21%21"),
        track(client, "SHARED0001"),
        client.get(f"/api/v1/track/{issued}?tenant=shop-b"),
        client.post("/api/v1/track/NOSUCH0001/verify", json={"postcode": "LS1 4AP"}),
    ]

    assert {miss.status_code for miss in misses} == {404}
    assert len({miss.content for miss in misses}) == 1
    assert misses[0].headers["content-type"] == "application/problem+json"


def test_a_number_two_tenants_share_is_found_with_the_tenant_named(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    other_key = tenants.create_tenant(vault=vault, name="shop-b")
    create(client, shop_key, tracking_number="SHARED0001", service="from-a")
    create(client, other_key, tracking_number="SHARED0001", service="from-b")

    response = client.get("/api/v1/track/SHARED0001?tenant=shop-b")

    assert response.status_code == 200
    assert response.json()["service"] == "from-b"


# --- verification and the recipient view ---------------------------------------------


def test_verifying_with_the_postcode_in_any_spelling_sets_a_strict_http_only_cookie(
    client: TestClient, clock: Clock, delivered: str
) -> None:
    response = client.post(f"/api/v1/track/{delivered}/verify", json={"postcode": "ls1 4ap"})

    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "recipient"
    assert datetime.fromisoformat(body["expires_at"]) == clock.now + timedelta(seconds=1800)
    assert response.headers["cache-control"] == "private, no-store"
    (morsel,) = set_cookie(response).values()
    assert morsel.key.startswith("pvr_")
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["max-age"] == "1800"
    assert morsel["path"] == "/"
    assert not morsel["secure"]


@pytest.mark.parametrize("spelling", ["LS1 4AP", "ls14ap", " Ls1-4aP "])
def test_the_postcode_is_compared_without_case_spaces_or_hyphens(
    client: TestClient, delivered: str, spelling: str
) -> None:
    response = client.post(f"/api/v1/track/{delivered}/verify", json={"postcode": spelling})

    assert response.status_code == 200


def test_the_cookie_is_secure_when_the_request_came_over_https(
    client: TestClient, delivered: str
) -> None:
    secure_client = TestClient(client.app, base_url="https://testserver")

    response = secure_client.post(f"/api/v1/track/{delivered}/verify", json={"postcode": "LS14AP"})

    (morsel,) = set_cookie(response).values()
    assert morsel["secure"] is True


def test_the_cookie_opens_the_recipient_view_which_is_never_cached(
    client: TestClient, delivered: str
) -> None:
    name, token = verify(client, delivered)

    response = track(client, delivered, f"{name}={token}")

    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "recipient"
    assert body["recipient"] == {
        "name": "Jane Doe",
        "email": "jane@example.org",
        "phone": "+44 7700 900123",
    }
    assert body["destination"]["street"] == ["12 Example Street"]
    assert body["destination"]["postcode"] == "LS1 4AP"
    assert body["events"][0]["proof"]["received_by"] == RECEIVED_BY
    assert "tenant" not in body
    assert response.headers["cache-control"] == "private, no-store"
    assert "etag" not in response.headers
    assert "cookie" in response.headers["vary"].lower()


def test_the_recipient_view_ignores_if_none_match(client: TestClient, delivered: str) -> None:
    etag = track(client, delivered).headers["etag"]
    name, token = verify(client, delivered)

    response = track(client, delivered, f"{name}={token}", **{"If-None-Match": etag})

    assert response.status_code == 200
    assert response.json()["tier"] == "recipient"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.split(".")[0] + "." + str(int(t.split(".")[1]) + 86400) + "." + t.split(".")[2],
        lambda t: "x" + t[1:],
        lambda t: "garbage",
        lambda t: "",
        lambda t: t + ".extra",
    ],
)
def test_a_tampered_cookie_gives_the_public_view(
    client: TestClient, delivered: str, tamper: Any
) -> None:
    name, token = verify(client, delivered)

    response = track(client, delivered, f"{name}={tamper(token)}")

    assert response.status_code == 200
    assert response.json()["tier"] == "public"
    assert response.headers["cache-control"] == "public, max-age=30"


def test_an_expired_cookie_gives_the_public_view(
    client: TestClient, clock: Clock, delivered: str
) -> None:
    name, token = verify(client, delivered)
    clock.advance(1799)
    assert track(client, delivered, f"{name}={token}").json()["tier"] == "recipient"

    clock.advance(2)

    assert track(client, delivered, f"{name}={token}").json()["tier"] == "public"


def test_a_cookie_for_another_shipment_gives_the_public_view(
    client: TestClient, shop_key: str, delivered: str
) -> None:
    other = create(client, shop_key)
    name, _ = verify(client, delivered)
    other_name, other_token = verify(client, other)

    under_this_name = track(client, delivered, f"{name}={other_token}")
    under_its_own_name = track(client, delivered, f"{other_name}={other_token}")

    assert under_this_name.json()["tier"] == "public"
    assert under_its_own_name.json()["tier"] == "public"


def refused_on_the_page(client: TestClient, number: str) -> tuple[str, str, str]:
    """(page address, cookie name, token) after a wrong postcode in the page's form; the
    client keeps no cookie."""
    wrong = {"postcode": "ZZ9 9ZZ"}
    posted = client.post(f"/t/{number}/verify", data=wrong, follow_redirects=False)
    assert posted.status_code == 303
    client.cookies.clear()
    (morsel,) = set_cookie(posted).values()
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert (morsel["path"], morsel["max-age"]) == ("/t/", "900")
    return posted.headers["location"], morsel.key, morsel.value


def test_only_the_client_whose_postcode_was_refused_is_told_how_the_check_stands(
    client: TestClient, delivered: str
) -> None:
    address, name, token = refused_on_the_page(client, delivered)
    assert address == f"/t/{delivered}?verify=failed"

    own = client.get(address, headers={"Cookie": f"{name}={token}"})
    stranger = client.get(address)

    assert own.status_code == 403
    assert "4 attempt(s) left" in own.text
    assert own.headers["cache-control"] == "private, no-store"
    assert stranger.status_code == 200
    assert "attempt" not in stranger.text
    assert "does not match" not in stranger.text


def test_a_refusal_cookie_opens_nothing_and_a_recipient_cookie_is_no_refusal(
    client: TestClient, delivered: str
) -> None:
    address, refusal_name, refusal_token = refused_on_the_page(client, delivered)
    recipient_name, recipient_token = verify(client, delivered)
    assert refusal_name != recipient_name

    as_recipient = track(client, delivered, f"{recipient_name}={refusal_token}")
    as_refusal = client.get(address, headers={"Cookie": f"{refusal_name}={recipient_token}"})

    assert as_recipient.json()["tier"] == "public"
    assert as_refusal.status_code == 200
    assert "attempt" not in as_refusal.text


def test_the_verify_body_must_be_a_short_postcode(client: TestClient, delivered: str) -> None:
    answers = [
        client.post(f"/api/v1/track/{delivered}/verify", json=body)
        for body in (
            {},
            {"postcode": ""},
            {"postcode": "X" * 17},
            {"postcode": 1234},
            {"postcode": "LS1 4AP", "name": "Jane"},
        )
    ]

    assert [answer.status_code for answer in answers] == [422] * 5


# --- lockout ------------------------------------------------------------------------


def wrong(client: TestClient, number: str) -> Response:
    return client.post(f"/api/v1/track/{number}/verify", json={"postcode": "ZZ9 9ZZ"})


def test_five_wrong_postcodes_lock_verification_and_even_the_right_one_is_refused(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    number = create(any_client, any_shop_key)

    first_four = [wrong(any_client, number) for _ in range(4)]
    fifth = wrong(any_client, number)
    right = any_client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})

    assert [r.status_code for r in first_four] == [403] * 4
    assert [r.json()["remaining_attempts"] for r in first_four] == [4, 3, 2, 1]
    assert fifth.status_code == 429
    assert fifth.headers["content-type"] == "application/problem+json"
    assert fifth.json()["status"] == 429
    assert 1 <= int(fifth.headers["retry-after"]) <= 15 * 60 + 1
    assert right.status_code == 429
    assert "set-cookie" not in right.headers
    assert 1 <= int(right.headers["retry-after"]) <= 15 * 60 + 1


def test_verification_works_again_once_retry_after_has_passed(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    number = create(any_client, any_shop_key)
    for _ in range(5):
        wrong(any_client, number)
    any_clock.advance(60)
    locked = any_client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})
    assert locked.status_code == 429

    any_clock.advance(int(locked.headers["retry-after"]))

    response = any_client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})
    assert response.status_code == 200
    assert set_cookie(response)


def test_wrong_postcodes_older_than_the_window_do_not_count(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    number = create(any_client, any_shop_key)
    for _ in range(4):
        wrong(any_client, number)

    any_clock.advance(15 * 60 + 1)
    answers = [wrong(any_client, number).status_code for _ in range(4)]

    assert answers == [403] * 4


def test_a_lock_on_one_shipment_does_not_lock_another(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    locked = create(any_client, any_shop_key)
    other = create(any_client, any_shop_key)
    for _ in range(5):
        wrong(any_client, locked)

    response = any_client.post(f"/api/v1/track/{other}/verify", json={"postcode": "LS1 4AP"})

    assert response.status_code == 200


# --- the public rate limit ---------------------------------------------------------------


@pytest.fixture
def rate_limited(
    vault: Vault, sqlite_url: str, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("PARCELVAULT_PUBLIC_RATE_LIMIT", "3")
    settings = Settings(database_url=sqlite_url, key_dir=key_dir)
    assert settings.public_rate_limit == 3
    with TestClient(create_app(settings, vault=vault)) as limited:
        yield limited


def test_the_fourth_public_lookup_in_a_minute_is_429_with_retry_after(
    rate_limited: TestClient, shop_key: str
) -> None:
    number = create(rate_limited, shop_key)

    allowed = [track(rate_limited, number).status_code for _ in range(3)]
    refused = track(rate_limited, number)

    assert allowed == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1


def test_tracking_pages_and_verification_share_the_public_limit(
    rate_limited: TestClient, shop_key: str
) -> None:
    number = create(rate_limited, shop_key)
    track(rate_limited, number)
    rate_limited.get(f"/t/{number}")
    rate_limited.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})

    answers = [
        rate_limited.get(f"/t/{number}").status_code,
        rate_limited.post(
            f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"}
        ).status_code,
        track(rate_limited, number).status_code,
    ]

    assert answers == [429, 429, 429]


def test_tenant_calls_are_not_held_by_the_public_limit(
    rate_limited: TestClient, shop_key: str
) -> None:
    number = create(rate_limited, shop_key)

    answers = {
        rate_limited.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).status_code
        for _ in range(10)
    }

    assert answers == {200}


def test_a_forwarded_for_header_is_ignored_unless_trusted(
    rate_limited: TestClient, shop_key: str
) -> None:
    number = create(rate_limited, shop_key)

    answers = [
        track(rate_limited, number, **{"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(4)
    ]

    assert answers == [200, 200, 200, 429]


def test_a_trusted_forwarded_for_header_gives_each_address_its_own_budget(
    vault: Vault, sqlite_url: str, key_dir: Path, shop_key: str
) -> None:
    settings = Settings(
        database_url=sqlite_url, key_dir=key_dir, public_rate_limit=3, trust_forwarded_for=True
    )
    with TestClient(create_app(settings, vault=vault)) as limited:
        number = create(limited, shop_key)
        first = [track(limited, number, **{"X-Forwarded-For": "203.0.113.1"}) for _ in range(4)]
        second = track(limited, number, **{"X-Forwarded-For": "203.0.113.2, 10.0.0.1"})

    assert [r.status_code for r in first] == [200, 200, 200, 429]
    assert second.status_code == 200


def test_a_rate_limit_of_0_turns_the_limit_off(
    vault: Vault, sqlite_url: str, key_dir: Path, shop_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELVAULT_PUBLIC_RATE_LIMIT", "0")
    settings = Settings(database_url=sqlite_url, key_dir=key_dir)
    with TestClient(create_app(settings, vault=vault)) as unlimited:
        number = create(unlimited, shop_key)
        answers = {track(unlimited, number).status_code for _ in range(50)}

    assert answers == {200}


# --- the OpenAPI document ---------------------------------------------------------------

ENDPOINTS = {
    ("/api/v1/shipments", "post"),
    ("/api/v1/shipments/{tracking_number}", "get"),
    ("/api/v1/shipments/{tracking_number}/events", "post"),
    ("/api/v1/events/batch", "post"),
    ("/api/v1/track/{tracking_number}", "get"),
    ("/api/v1/track/{tracking_number}/verify", "post"),
}
COURIER_ENDPOINTS = {
    ("/api/v1/routes", "post"),
    ("/api/v1/routes/{route_id}", "delete"),
    ("/api/v1/courier/stops", "get"),
    ("/api/v1/courier/stops/{tracking_number}/complete", "post"),
}
SUBJECT_ENDPOINTS = {
    ("/api/v1/track/{tracking_number}/consents", "get"),
    ("/api/v1/track/{tracking_number}/consents/history", "get"),
    ("/api/v1/track/{tracking_number}/consents/{purpose}", "put"),
    ("/api/v1/track/{tracking_number}/address", "post"),
}
HEALTH_ENDPOINTS = {("/healthz", "get")}
ME_ENDPOINTS = {
    ("/api/v1/me", "get"),
    ("/api/v1/me/access-log", "get"),
    ("/api/v1/me/export", "get"),
    ("/api/v1/me/erasure", "post"),
    ("/api/v1/me/erasures/{receipt_id}", "get"),
    ("/api/v1/me/sign-out", "post"),
}


def test_the_openapi_document_lists_every_api_endpoint(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    listed = {(path, method) for path, item in document["paths"].items() for method in item}
    routed = {
        (route.path, method.lower())
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }

    assert listed == (
        ENDPOINTS
        | COURIER_ENDPOINTS
        | LEDGER_ENDPOINTS
        | SUBJECT_ENDPOINTS
        | ME_ENDPOINTS
        | HEALTH_ENDPOINTS
    )
    assert routed == ENDPOINTS


def test_the_openapi_document_describes_errors_as_problem_json(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    for path, method in ENDPOINTS:
        responses = document["paths"][path][method]["responses"]
        assert "application/problem+json" in responses["404"]["content"], (path, method)
        assert "application/problem+json" in responses["422"]["content"], (path, method)


def test_the_openapi_document_describes_the_fields_of_a_batch_item(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemas_ = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = schemas_[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    body = document["paths"]["/api/v1/events/batch"]["post"]["requestBody"]
    envelope = resolve(body["content"]["application/json"]["schema"])
    events = envelope["properties"]["events"]
    item = resolve(events["items"])

    assert (events["minItems"], events["maxItems"]) == (1, 1000)
    assert {"tracking_number", "event_id", "time", "status", "proof"} <= set(item["properties"])
    assert item["additionalProperties"] is False


def test_real_responses_of_every_tier_match_the_documented_models(
    client: TestClient, shop_key: str
) -> None:
    number = create(client, shop_key, service="express")
    created = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()
    deliver(client, shop_key, number)
    public = track(client, number).json()
    name, token = verify(client, number)
    recipient = track(client, number, f"{name}={token}").json()
    merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()

    for body in (created, public, recipient, merchant):
        schemas.TrackingOut.model_validate(body)
    assert [body["tier"] for body in (public, recipient, merchant)] == [
        "public",
        "recipient",
        "merchant",
    ]
    assert merchant["events"][0]["proof"]["geo"] == "53.80,-1.55"
    assert recipient["events"][0]["proof"]["geo"] == "53.799712,-1.549234"
    assert merchant["events"][0]["location"]["facility"] == "LDS2"


def test_the_other_answers_match_their_documented_models(client: TestClient, shop_key: str) -> None:
    number = create(client, shop_key)
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    ingested = client.post(
        f"/api/v1/shipments/{number}/events",
        json={"event_id": "m1", "time": when, "status": "in_transit"},
        headers=bearer(shop_key),
    )
    verified = client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})
    invalid = client.post("/api/v1/shipments", json={}, headers=bearer(shop_key))

    schemas.IngestOut.model_validate(ingested.json())
    schemas.VerifiedOut.model_validate(verified.json())
    problem = schemas.ProblemOut.model_validate(invalid.json())
    assert problem.errors


def test_a_cached_public_view_is_replaced_as_soon_as_an_event_arrives(
    any_client: TestClient, any_shop_key: str
) -> None:
    created = any_client.post(
        "/api/v1/shipments", json=shipment_payload(), headers=bearer(any_shop_key)
    )
    number = created.json()["tracking_number"]
    first = any_client.get(f"/api/v1/track/{number}")
    again = any_client.get(f"/api/v1/track/{number}")
    assert first.content == again.content
    scan = {
        "event_id": f"hub-{number}",
        "time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "status": "in_transit",
    }
    posted = any_client.post(
        f"/api/v1/shipments/{number}/events", json=scan, headers=bearer(any_shop_key)
    )
    assert posted.status_code == 201
    after = any_client.get(f"/api/v1/track/{number}")
    assert after.json()["status"] == "in_transit"
    assert after.headers["etag"] != first.headers["etag"]


def test_a_verified_recipient_never_gets_the_cached_public_view(
    client: TestClient, shop_key: str
) -> None:
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))
    number = created.json()["tracking_number"]
    assert client.get(f"/api/v1/track/{number}").json()["tier"] == "public"
    assert client.get(f"/api/v1/track/{number}").json()["tier"] == "public"
    client.cookies.set("unrelated", "x")
    verified = client.post(f"/api/v1/track/{number}/verify", json={"postcode": "LS1 4AP"})
    assert verified.status_code == 200
    view = client.get(f"/api/v1/track/{number}")
    assert view.json()["tier"] == "recipient"
    assert view.headers["cache-control"] == "private, no-store"


def test_staff_sign_in_attempts_share_the_per_address_limit(
    vault: Vault, sqlite_url: str, key_dir: Path
) -> None:
    settings = Settings(database_url=sqlite_url, key_dir=key_dir, public_rate_limit=2)
    with TestClient(create_app(settings, vault=vault)) as limited:
        answers = [
            limited.post("/staff/login", data={"username": "x", "password": "y"}).status_code
            for _ in range(3)
        ]
    assert answers[:2] != [429, 429]
    assert answers[2] == 429
