"""The recipient's consents and address corrections over HTTP, on SQLite and PostgreSQL:
only for a verified recipient, opt-in by default, idempotent, recorded in the ledger,
corrections only before out_for_delivery, and every refusal an RFC 9457 problem."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.app import create_app
from parcelvault.ledger import log as ledger_log
from parcelvault.privacy.policy import default_policy_text
from parcelvault.services import erasure, tenants
from parcelvault.services.consent import PURPOSES
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, make_vault
from tests.e2e.test_api_errors import assert_problem, json_values
from tests.e2e.test_api_tracking import SUBJECT_ENDPOINTS, create, track, verify

PROBLEM = "application/problem+json"


def base(number: str) -> str:
    return f"/api/v1/track/{number}"


def cookie_of(client: TestClient, number: str, postcode: str = "LS1 4AP") -> str:
    name, token = verify(client, number, postcode)
    return f"{name}={token}"


def notice(client: TestClient, number: str, cookie: str) -> str:
    response = client.get(f"{base(number)}/consents", headers={"Cookie": cookie})
    assert response.status_code == 200, response.text
    version: str = response.json()["notice_version"]
    return version


def put(client: TestClient, number: str, cookie: str | None, purpose: str, body: Any) -> Any:
    headers = {"Cookie": cookie} if cookie else {}
    return client.put(f"{base(number)}/consents/{purpose}", json=body, headers=headers)


def post_event(client: TestClient, key: str, number: str, status: str, minutes_ago: int) -> None:
    event = {
        "event_id": f"{number}-{status}",
        "time": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "status": status,
    }
    response = client.post(f"/api/v1/shipments/{number}/events", json=event, headers=bearer(key))
    assert response.status_code == 201, response.text


@pytest.fixture
def number(any_client: TestClient, any_shop_key: str) -> str:
    return create(any_client, any_shop_key)


@pytest.fixture
def cookie(any_client: TestClient, number: str) -> str:
    return cookie_of(any_client, number)


# --- who may ask ------------------------------------------------------------------------


def requests_of(number: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"{base(number)}/consents", None),
        ("GET", f"{base(number)}/consents/history", None),
        ("PUT", f"{base(number)}/consents/analytics", {"granted": False, "notice_version": "x"}),
        ("POST", f"{base(number)}/address", {"street": ["1 Road"]}),
    ]


def test_without_the_recipient_cookie_every_endpoint_is_a_401_problem(
    any_client: TestClient, any_shop_key: str, number: str
) -> None:
    other = create(any_client, any_shop_key)
    cookie_for_other = cookie_of(any_client, other)

    for method, path, body in requests_of(number):
        for headers in ({}, {"Cookie": cookie_for_other}, {"Cookie": "pvr_x=forged.1.mac"}):
            response = any_client.request(method, path, json=body, headers=headers)
            problem = assert_problem(response, 401)
            assert problem["type"] == "/problems/recipient-unverified"
            assert response.headers["www-authenticate"].startswith("Cookie")
            assert response.headers["cache-control"] == "no-store"


def test_an_unknown_number_is_the_same_404_problem_with_or_without_a_cookie(
    any_client: TestClient, cookie: str
) -> None:
    for method, path, body in requests_of("ZZZZ9999ZZZZ"):
        for headers in ({}, {"Cookie": cookie}):
            response = any_client.request(method, path, json=body, headers=headers)
            assert assert_problem(response, 404)["type"] == "/problems/not-found"


def test_an_expired_cookie_no_longer_opens_the_consents(
    any_client: TestClient, any_vault: Vault, number: str, cookie: str
) -> None:
    later = datetime.now(UTC) + timedelta(seconds=any_vault.settings.recipient_session_seconds + 5)
    any_vault.clock = lambda: later

    response = any_client.get(f"{base(number)}/consents", headers={"Cookie": cookie})

    assert_problem(response, 401)


# --- consents ---------------------------------------------------------------------------


def test_every_purpose_starts_not_consented_with_the_notice_in_force(
    any_client: TestClient, any_vault: Vault, number: str, cookie: str
) -> None:
    response = any_client.get(f"{base(number)}/consents", headers={"Cookie": cookie})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"
    body = schemas.ConsentsOut.model_validate(response.json())
    assert body.notice_version == any_vault.policy.digest[:12]
    assert body.notice_url == "/privacy"
    assert [c.purpose for c in body.consents] == list(PURPOSES)
    assert all(c.granted is False and c.at is None for c in body.consents)


def test_giving_withdrawing_and_resubmitting_over_http(
    any_client: TestClient, number: str, cookie: str
) -> None:
    version = notice(any_client, number, cookie)
    give = {"granted": True, "notice_version": version}
    withdraw = {"granted": False, "notice_version": version}

    answers = [
        put(any_client, number, cookie, "notify_sms", give),
        put(any_client, number, cookie, "notify_sms", give),
        put(any_client, number, cookie, "notify_sms", withdraw),
        put(any_client, number, cookie, "notify_sms", withdraw),
        put(any_client, number, cookie, "analytics", give),
    ]

    assert [a.status_code for a in answers] == [200] * 5
    changes = [schemas.ConsentChangeOut.model_validate(a.json()) for a in answers]
    assert [(c.granted, c.changed) for c in changes] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
        (True, True),
    ]
    assert changes[0].source == "recipient_api"
    assert changes[0].notice_version == version
    listed = any_client.get(f"{base(number)}/consents", headers={"Cookie": cookie}).json()
    granted = {c["purpose"]: c["granted"] for c in listed["consents"]}
    assert granted == {p: p == "analytics" for p in PURPOSES}
    history = any_client.get(f"{base(number)}/consents/history", headers={"Cookie": cookie})
    lines = schemas.ConsentHistoryOut.model_validate(history.json()).history
    assert [(line.purpose, line.granted) for line in lines] == [
        ("analytics", True),
        ("notify_sms", False),
        ("notify_sms", True),
    ]


def test_consents_follow_the_person_to_their_other_shipments(
    any_client: TestClient, any_shop_key: str, number: str, cookie: str
) -> None:
    second = create(any_client, any_shop_key)
    second_cookie = cookie_of(any_client, second)
    version = notice(any_client, number, cookie)

    put(any_client, number, cookie, "notify_email", {"granted": True, "notice_version": version})
    seen = any_client.get(f"{base(second)}/consents", headers={"Cookie": second_cookie}).json()

    assert {c["purpose"]: c["granted"] for c in seen["consents"]}["notify_email"] is True


def test_a_consent_change_is_a_ledger_entry_its_recipient_can_read(
    any_client: TestClient, any_vault: Vault, number: str, cookie: str
) -> None:
    version = notice(any_client, number, cookie)
    put(any_client, number, cookie, "analytics", {"granted": True, "notice_version": version})
    ledger_log.sequence(any_vault.engine, now=datetime.now(UTC))
    size = ledger_log_size(any_vault)

    entries = [any_client.get(f"/api/v1/ledger/entries/{i}").json() for i in range(size)]
    mine = [
        any_client.get(f"/api/v1/ledger/entries/{i}", headers={"Cookie": cookie}).json()
        for i in range(size)
    ]

    consent_entries = [e for e in entries if e["kind"] == "consent"]
    assert len(consent_entries) == 1
    assert consent_entries[0]["withheld"] is True
    assert consent_entries[0]["body"] is None
    (shown,) = [e for e in mine if e["kind"] == "consent"]
    assert shown["body"]["purpose"] == "analytics"
    assert shown["body"]["granted"] is True
    assert shown["body"]["notice_version"] == version
    assert "shipment" not in shown["body"]


def ledger_log_size(vault: Vault) -> int:
    with vault.engine.connect() as connection:
        return ledger_log.size(connection)


@pytest.mark.parametrize(
    ("purpose", "body", "locations"),
    [
        ("marketing", {"granted": True, "notice_version": "v"}, [["purpose"]]),
        ("analytics", {"granted": "yes", "notice_version": "v"}, [["granted"]]),
        ("analytics", {"granted": 1, "notice_version": "v"}, [["granted"]]),
        ("analytics", {"granted": True}, [["notice_version"]]),
        ("analytics", {"notice_version": "v"}, [["granted"]]),
        ("analytics", {"granted": True, "notice_version": "v", "extra": 1}, [["extra"]]),
        ("analytics", {"granted": False, "notice_version": "bad version!"}, [["notice_version"]]),
        ("analytics", {"granted": False, "notice_version": "x" * 33}, [["notice_version"]]),
        ("analytics", [], [[]]),
    ],
)
def test_a_bad_purpose_or_body_is_a_422_problem_naming_the_field(
    any_client: TestClient,
    number: str,
    cookie: str,
    purpose: str,
    body: Any,
    locations: list[list[str]],
) -> None:
    response = put(any_client, number, cookie, purpose, body)

    problem = assert_problem(response, 422)
    assert [e["loc"] for e in problem["errors"]] == locations
    history = any_client.get(f"{base(number)}/consents/history", headers={"Cookie": cookie})
    assert history.json()["history"] == []


def test_giving_a_consent_against_an_outdated_notice_is_a_409_problem(
    any_client: TestClient, number: str, cookie: str
) -> None:
    response = put(
        any_client, number, cookie, "notify_email", {"granted": True, "notice_version": "0" * 12}
    )

    problem = assert_problem(response, 409)
    assert "notice has changed" in problem["detail"]


def test_malformed_or_non_json_bodies_are_400_and_415_problems(
    any_client: TestClient, number: str, cookie: str
) -> None:
    endpoints = [(f"{base(number)}/consents/analytics", "PUT"), (f"{base(number)}/address", "POST")]
    for path, method in endpoints:
        broken = any_client.request(
            method,
            path,
            content=b'{"granted": ',
            headers={"Cookie": cookie, "Content-Type": "application/json"},
        )
        as_text = any_client.request(
            method, path, content=b"granted=true", headers={"Cookie": cookie}
        )
        assert_problem(broken, 400)
        assert_problem(as_text, 415)


# --- address corrections ----------------------------------------------------------------


def address_of(client: TestClient, number: str, cookie: str) -> dict[str, Any]:
    view = track(client, number, cookie)
    assert view.json()["tier"] == "recipient"
    destination: dict[str, Any] = view.json()["destination"]
    return destination


def test_a_recipient_corrects_the_street_and_sees_it_at_once(
    any_client: TestClient, number: str, cookie: str
) -> None:
    before = address_of(any_client, number, cookie)

    response = any_client.post(
        f"{base(number)}/address",
        json={"street": ["Flat 3", "14 Corrected Road"], "notes": "Side door"},
        headers={"Cookie": cookie},
    )

    assert response.status_code == 200, response.text
    body = schemas.AddressCorrectionOut.model_validate(response.json())
    assert body.corrected == ["destination.notes", "destination.street"]
    assert body.at is not None
    assert "Corrected" not in response.text
    after = address_of(any_client, number, cookie)
    assert before["street"] == ["12 Example Street"]
    assert after["street"] == ["Flat 3", "14 Corrected Road"]
    assert after["notes"] == "Side door"
    assert after["postcode"] == before["postcode"]


def test_after_a_postcode_correction_the_cookie_still_works_and_only_the_new_postcode_verifies(
    any_client: TestClient, number: str, cookie: str
) -> None:
    response = any_client.post(
        f"{base(number)}/address", json={"postcode": "LS2 7EE"}, headers={"Cookie": cookie}
    )

    assert response.json()["corrected"] == ["destination.postcode"]
    assert address_of(any_client, number, cookie)["postcode"] == "LS2 7EE"
    old = any_client.post(f"{base(number)}/verify", json={"postcode": "LS1 4AP"})
    assert_problem(old, 403)
    any_client.cookies.clear()
    assert cookie_of(any_client, number, "ls2 7ee")


def test_resending_the_same_correction_changes_nothing(
    any_client: TestClient, number: str, cookie: str
) -> None:
    first = any_client.post(
        f"{base(number)}/address", json={"street": ["2 Same Street"]}, headers={"Cookie": cookie}
    )
    again = any_client.post(
        f"{base(number)}/address", json={"street": ["2 Same Street"]}, headers={"Cookie": cookie}
    )

    assert first.json()["corrected"] == ["destination.street"]
    assert again.json() == {"corrected": [], "at": None}


@pytest.mark.parametrize("status", ["out_for_delivery", "delivered"])
def test_once_the_parcel_is_out_for_delivery_a_correction_is_a_409_problem_naming_the_status(
    any_client: TestClient, any_shop_key: str, number: str, cookie: str, status: str
) -> None:
    post_event(any_client, any_shop_key, number, "in_transit", 120)
    post_event(any_client, any_shop_key, number, status, 60)

    response = any_client.post(
        f"{base(number)}/address", json={"street": ["1 Late Lane"]}, headers={"Cookie": cookie}
    )

    problem = assert_problem(response, 409)
    assert f"its status is {status}" in problem["detail"]
    assert address_of(any_client, number, cookie)["street"] == ["12 Example Street"]


def test_in_transit_a_correction_is_still_accepted(
    any_client: TestClient, any_shop_key: str, number: str, cookie: str
) -> None:
    post_event(any_client, any_shop_key, number, "in_transit", 60)

    response = any_client.post(
        f"{base(number)}/address", json={"postcode": "LS3 1AA"}, headers={"Cookie": cookie}
    )

    assert response.status_code == 200


def test_after_erasure_corrections_and_consents_are_410_problems(
    any_client: TestClient, any_vault: Vault, number: str, cookie: str
) -> None:
    version = notice(any_client, number, cookie)
    erasure.erase_subject(
        vault=any_vault, subject_id=subject_of(any_vault, number), requested_by="operator"
    )

    corrected = any_client.post(
        f"{base(number)}/address", json={"street": ["1 Gone Road"]}, headers={"Cookie": cookie}
    )
    give = {"granted": True, "notice_version": version}
    given = put(any_client, number, cookie, "analytics", give)
    listed = any_client.get(f"{base(number)}/consents", headers={"Cookie": cookie})

    assert "erased" in assert_problem(corrected, 410)["detail"]
    assert assert_problem(given, 410)["type"] == "/problems/erased"
    assert not any(c["granted"] for c in listed.json()["consents"])


def subject_of(vault: Vault, number: str) -> str:
    from sqlalchemy import select

    from parcelvault.adapters.db.tables import shipments

    with vault.engine.connect() as connection:
        subject: str = connection.execute(
            select(shipments.c.subject_id).where(shipments.c.tracking_number == number)
        ).scalar_one()
    return subject


@pytest.mark.parametrize(
    ("body", "locations"),
    [
        ({}, [[]]),
        ({"street": []}, [["street"]]),
        ({"street": None}, [["street"]]),
        ({"postcode": None}, [["postcode"]]),
        ({"street": ["one\ntwo"]}, [["street", 0]]),
        ({"street": ["ok", ""]}, [["street", 1]]),
        ({"street": ["x"] * 5}, [["street"]]),
        ({"street": "1 Not A List"}, [["street"]]),
        ({"postcode": "A"}, [["postcode"]]),
        ({"postcode": 12345}, [["postcode"]]),
        ({"notes": "n" * 301}, [["notes"]]),
        ({"city": "Bradford"}, [["city"]]),
        ({"street": ["a\x00b"], "postcode": "Q"}, [["street", 0], ["postcode"]]),
    ],
)
def test_a_bad_correction_is_a_422_problem_naming_each_field(
    any_client: TestClient, number: str, cookie: str, body: Any, locations: list[list[Any]]
) -> None:
    response = any_client.post(f"{base(number)}/address", json=body, headers={"Cookie": cookie})

    problem = assert_problem(response, 422)
    assert [e["loc"] for e in problem["errors"]] == locations
    assert address_of(any_client, number, cookie)["street"] == ["12 Example Street"]


def test_a_corrected_canary_is_in_no_response_but_the_recipients_own_view(
    any_client: TestClient, number: str, cookie: str, canaries: Canaries
) -> None:
    response = any_client.post(
        f"{base(number)}/address",
        json={"street": [canaries.street], "postcode": canaries.postcode},
        headers={"Cookie": cookie},
    )
    public = track(any_client, number)

    assert response.status_code == 200
    assert canaries.found_in(response.content) == []
    assert public.json()["tier"] == "public"
    assert canaries.found_in(public.content) == []
    assert address_of(any_client, number, cookie)["street"] == [canaries.street]


# --- caching: the version bump ----------------------------------------------------------


@pytest.fixture
def postcode_prefix_client(tmp_path: Path, key_dir: Path, sqlite_url: str) -> Iterator[TestClient]:
    """An operator policy that shows the public the postcode's outward part."""
    text = default_policy_text()
    header = '[fields."destination.postcode".exposure]\npublic = "hidden"'
    assert header in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text.replace(header, header.replace('"hidden"', '"masked"')))
    vault = make_vault(sqlite_url, key_dir, policy=policy)
    with TestClient(create_app(vault=vault)) as client:
        yield client
    vault.engine.dispose()


def test_a_correction_bumps_the_version_so_cached_public_views_and_etags_change(
    postcode_prefix_client: TestClient,
) -> None:
    client = postcode_prefix_client
    vault: Vault = client.app.state.vault  # type: ignore[attr-defined]
    key = tenants.create_tenant(vault=vault, name="shop-p")
    number = create(client, key)
    cookie = cookie_of(client, number)
    first = track(client, number)
    cached = track(client, number, **{"If-None-Match": first.headers["etag"]})

    client.post(f"{base(number)}/address", json={"postcode": "LS2 7EE"}, headers={"Cookie": cookie})
    after = track(client, number, **{"If-None-Match": first.headers["etag"]})

    assert first.json()["destination"]["postcode"] == "LS1"
    assert cached.status_code == 304
    assert after.status_code == 200
    assert after.json()["destination"]["postcode"] == "LS2"
    assert after.headers["etag"] != first.headers["etag"]


# --- the OpenAPI document ---------------------------------------------------------------


def test_the_openapi_document_describes_the_recipient_endpoints_and_their_problems(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]

    for path, method in SUBJECT_ENDPOINTS:
        operation = paths[path][method]
        assert operation["tags"] == ["recipient"]
        for status in ("401", "404", "409", "410", "422"):
            assert PROBLEM in operation["responses"][status]["content"], (path, status)
    put_body = paths["/api/v1/track/{tracking_number}/consents/{purpose}"]["put"]["requestBody"]
    post_body = paths["/api/v1/track/{tracking_number}/address"]["post"]["requestBody"]
    components = document["components"]["schemas"]
    consent_in = components[put_body["content"]["application/json"]["schema"]["$ref"][21:]]
    address_in = components[post_body["content"]["application/json"]["schema"]["$ref"][21:]]
    assert set(consent_in["properties"]) == {"granted", "notice_version"}
    assert set(address_in["properties"]) == {"street", "postcode", "notes"}
    ok = paths["/api/v1/track/{tracking_number}/consents"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/ConsentsOut")


# --- never a 500 ------------------------------------------------------------------------

address_bodies = st.fixed_dictionaries(
    {},
    optional={
        "street": json_values | st.lists(st.text(max_size=30), max_size=5),
        "postcode": json_values | st.text(max_size=14),
        "notes": json_values,
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    address=address_bodies,
    consent_body=json_values,
    purpose=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_ABCXYZ0189-.~", max_size=20),
)
def test_arbitrary_bodies_never_give_a_5xx(
    client: TestClient, shop_key: str, address: Any, consent_body: Any, purpose: str
) -> None:
    number = create(client, shop_key)
    cookie = cookie_of(client, number)
    answers = [
        client.post(f"{base(number)}/address", json=address, headers={"Cookie": cookie}),
        client.put(
            f"{base(number)}/consents/{purpose or 'x'}",
            json=consent_body,
            headers={"Cookie": cookie},
        ),
    ]
    for answer in answers:
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == PROBLEM
