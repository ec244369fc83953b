"""Bad requests of every kind get an RFC 9457 problem with the right status, and never
a 500: malformed and mistyped bodies, oversized bodies (declared or streamed), unknown
routes and methods, and arbitrary JSON thrown at the write endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload

MIB = 1024 * 1024
PROBLEM = "application/problem+json"


def json_headers(key: str) -> dict[str, str]:
    return {**bearer(key), "Content-Type": "application/json"}


def an_event(event_id: str = "e-1", **fields: Any) -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return {"event_id": event_id, "time": when, "status": "in_transit", **fields}


@pytest.fixture
def number(client: TestClient, shop_key: str) -> str:
    response = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))
    tracking_number: str = response.json()["tracking_number"]
    return tracking_number


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("/problems/")
    assert body["title"]
    return body


# --- bodies that are not JSON objects ---------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"origin": }', b"{'single': 'quotes'}", b"[1, 2,]", b"nul", b'{"a": 1} trailing'],
)
def test_malformed_json_is_a_400_problem(client: TestClient, shop_key: str, raw: bytes) -> None:
    response = client.post("/api/v1/shipments", content=raw, headers=json_headers(shop_key))

    body = assert_problem(response, 400)
    assert body["type"] == "/problems/malformed-json"


def test_malformed_json_is_a_400_problem_on_every_json_endpoint(
    client: TestClient, shop_key: str, number: str
) -> None:
    paths = [
        f"/api/v1/shipments/{number}/events",
        "/api/v1/events/batch",
        f"/api/v1/track/{number}/verify",
    ]

    for path in paths:
        assert_problem(client.post(path, content=b'{"x": ', headers=json_headers(shop_key)), 400)


def test_a_body_that_is_not_utf_8_is_a_400_problem(client: TestClient, shop_key: str) -> None:
    raw = b'{"reference": "\xff\xfe"}'

    assert_problem(
        client.post("/api/v1/shipments", content=raw, headers=json_headers(shop_key)), 400
    )


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_json_body_sent_without_a_json_content_type_is_a_415_problem(
    client: TestClient, shop_key: str, content_type: str | None
) -> None:
    headers = bearer(shop_key)
    if content_type:
        headers["Content-Type"] = content_type

    response = client.post(
        "/api/v1/shipments",
        content=json.dumps(shipment_payload(tracking_number="UNTYPED01")),
        headers=headers,
    )

    assert_problem(response, 415)
    missing = client.get("/api/v1/shipments/UNTYPED01", headers=bearer(shop_key))
    assert missing.status_code == 404


def test_a_json_content_type_with_a_charset_is_accepted(client: TestClient, shop_key: str) -> None:
    response = client.post(
        "/api/v1/shipments",
        content=json.dumps(shipment_payload()).encode(),
        headers={**bearer(shop_key), "Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201


def test_an_empty_body_is_a_422_problem(client: TestClient, shop_key: str) -> None:
    response = client.post("/api/v1/shipments", content=b"", headers=json_headers(shop_key))

    assert_problem(response, 422)


# --- wrong shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"origin": "London"}, ["origin"]),
        ({"origin": ["GB", "London"]}, ["origin"]),
        ({"recipient": None}, ["recipient"]),
        (
            {"destination": {**shipment_payload()["destination"], "street": "12 Example St"}},
            ["destination", "street"],
        ),
        (
            {"destination": {**shipment_payload()["destination"], "street": [12]}},
            ["destination", "street", 0],
        ),
        ({"promised_date": 20261202}, ["promised_date"]),
        ({"reference": {"nested": "object"}}, ["reference"]),
        ({"service": True}, ["service"]),
        ({"tracking_number": 123456}, ["tracking_number"]),
    ],
)
def test_a_value_of_the_wrong_type_is_a_422_naming_the_field(
    client: TestClient, shop_key: str, overrides: dict[str, Any], loc: list[Any]
) -> None:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(**overrides), headers=bearer(shop_key)
    )

    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [loc]
    assert all(error["message"] for error in body["errors"])


@pytest.mark.parametrize("body", [[], [shipment_payload()], "shipment", 42, None, True])
def test_a_body_that_is_not_an_object_is_a_422_problem(
    client: TestClient, shop_key: str, body: Any
) -> None:
    response = client.post(
        "/api/v1/shipments", content=json.dumps(body), headers=json_headers(shop_key)
    )

    assert_problem(response, 422)


def test_an_event_that_is_a_list_is_a_422_problem(
    client: TestClient, shop_key: str, number: str
) -> None:
    single = client.post(
        f"/api/v1/shipments/{number}/events", json=[an_event()], headers=bearer(shop_key)
    )
    batch = client.post(
        "/api/v1/events/batch", json={"events": [[an_event()]]}, headers=bearer(shop_key)
    )

    assert_problem(single, 422)
    assert [e["loc"] for e in assert_problem(batch, 422)["errors"]] == [["events", 0]]


def test_a_huge_string_is_refused_without_being_echoed(client: TestClient, shop_key: str) -> None:
    huge = "Q" * 900_000

    response = client.post(
        "/api/v1/shipments",
        json=shipment_payload(recipient={"name": huge}),
        headers=bearer(shop_key),
    )

    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["recipient", "name"]]
    assert len(response.content) < 1000


def test_a_huge_unknown_key_is_named_only_in_part(client: TestClient, shop_key: str) -> None:
    key = "k" * 100_000

    response = client.post(
        "/api/v1/shipments", json={**shipment_payload(), key: 1}, headers=bearer(shop_key)
    )

    body = assert_problem(response, 422)
    (error,) = body["errors"]
    assert error["loc"][0].startswith("kkkk")
    assert len(error["loc"][0]) <= 65
    assert len(response.content) < 1000


@pytest.mark.parametrize("depth", [50, 900, 5_000, 100_000])
def test_deeply_nested_json_is_refused_cleanly(
    client: TestClient, shop_key: str, depth: int
) -> None:
    nested = '{"reference": ' + "[" * depth + "]" * depth + "}"

    response = client.post("/api/v1/shipments", content=nested, headers=json_headers(shop_key))

    assert response.status_code in (400, 422)
    assert_problem(response, response.status_code)


def test_deeply_nested_json_in_a_batch_item_is_refused_cleanly(
    client: TestClient, shop_key: str
) -> None:
    nested = '{"events": [' + '{"a": ' * 800 + "1" + "}" * 800 + "]}"

    response = client.post("/api/v1/events/batch", content=nested, headers=json_headers(shop_key))

    assert_problem(response, 422)


# --- text the databases cannot store --------------------------------------------------------


def test_a_nul_character_in_any_shipment_text_is_a_422_naming_the_field(
    any_client: TestClient, any_shop_key: str
) -> None:
    body = shipment_payload(
        tracking_number="NULCHECK01",
        reference="order\x001001",
        destination={
            "country": "GB",
            "city": "Le\x00eds",
            "postcode": "LS1 4AP",
            "street": ["ok", "12 Example\x00 Street"],
        },
        recipient={"name": "Jane\x00Doe"},
    )

    response = any_client.post("/api/v1/shipments", json=body, headers=bearer(any_shop_key))

    errors = assert_problem(response, 422)["errors"]
    assert sorted(tuple(map(str, e["loc"])) for e in errors) == [
        ("destination", "city"),
        ("destination", "street", "1"),
        ("recipient", "name"),
        ("reference",),
    ]
    missing = any_client.get("/api/v1/shipments/NULCHECK01", headers=bearer(any_shop_key))
    assert missing.status_code == 404


def test_a_nul_character_in_event_text_is_a_422_and_nothing_is_written(
    any_client: TestClient, any_shop_key: str
) -> None:
    created = any_client.post(
        "/api/v1/shipments", json=shipment_payload(), headers=bearer(any_shop_key)
    )
    tracking_number = created.json()["tracking_number"]

    single = any_client.post(
        f"/api/v1/shipments/{tracking_number}/events",
        json=an_event("n-1", description="left at\x00door"),
        headers=bearer(any_shop_key),
    )
    batch = any_client.post(
        "/api/v1/events/batch",
        json={
            "events": [
                {**an_event("n-2"), "tracking_number": tracking_number},
                {
                    **an_event("n-3", location={"city": "Le\x00eds"}),
                    "tracking_number": tracking_number,
                },
            ]
        },
        headers=bearer(any_shop_key),
    )

    assert [e["loc"] for e in assert_problem(single, 422)["errors"]] == [["description"]]
    assert [e["loc"] for e in assert_problem(batch, 422)["errors"]] == [
        ["events", 1, "location", "city"]
    ]
    view = any_client.get(f"/api/v1/shipments/{tracking_number}", headers=bearer(any_shop_key))
    assert view.json()["events"] == []


def test_an_event_time_before_the_year_1_utc_is_a_422_not_a_500(
    any_vault: Vault, any_shop_key: str
) -> None:
    from parcelvault.entrypoints.api.app import create_app

    with TestClient(create_app(vault=any_vault), raise_server_exceptions=False) as lenient:
        created = lenient.post(
            "/api/v1/shipments", json=shipment_payload(), headers=bearer(any_shop_key)
        )
        tracking_number = created.json()["tracking_number"]
        response = lenient.post(
            f"/api/v1/shipments/{tracking_number}/events",
            json=an_event(time="0001-01-01T00:30:00+01:00"),
            headers=bearer(any_shop_key),
        )

    assert_problem(response, 422)


# --- size limits --------------------------------------------------------------------------


def padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` as JSON, padded with whitespace to exactly `size` bytes."""
    raw = json.dumps(payload).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_a_body_of_exactly_the_limit_is_accepted(client: TestClient, shop_key: str) -> None:
    response = client.post(
        "/api/v1/shipments", content=padded(shipment_payload(), MIB), headers=json_headers(shop_key)
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    "path", ["/api/v1/shipments", "/api/v1/events/batch", "/api/v1/track/X1234/verify"]
)
def test_a_body_over_1_mib_with_content_length_is_a_413_problem(
    client: TestClient, shop_key: str, path: str
) -> None:
    response = client.post(
        path, content=padded(shipment_payload(), MIB + 1), headers=json_headers(shop_key)
    )

    assert_problem(response, 413)


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


def test_a_streamed_body_over_1_mib_without_content_length_is_a_413_problem(
    client: TestClient, shop_key: str
) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"reference": "'
        yield from chunks(MIB + 10)
        yield b'"}'

    response = client.post("/api/v1/shipments", content=body(), headers=json_headers(shop_key))

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413)


def test_a_small_streamed_body_without_content_length_is_read_whole(
    client: TestClient, shop_key: str
) -> None:
    raw = json.dumps(shipment_payload(tracking_number="STREAMED01")).encode()

    def body() -> Iterator[bytes]:
        for start in range(0, len(raw), 7):
            yield raw[start : start + 7]

    response = client.post("/api/v1/shipments", content=body(), headers=json_headers(shop_key))

    assert "content-length" not in response.request.headers
    assert response.status_code == 201
    assert response.json()["tracking_number"] == "STREAMED01"


# --- routes and methods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here", "/api/v2/shipments", "/no/such/page", "/static/missing.css"]
)
def test_an_unknown_route_is_the_same_404_problem_as_an_unknown_shipment(
    client: TestClient, path: str
) -> None:
    response = client.get(path)

    assert_problem(response, 404)
    assert response.content == client.get("/api/v1/track/NOSUCH0001").content


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/shipments", "POST"),
        ("GET", "/api/v1/shipments", "POST"),
        ("PUT", "/api/v1/shipments/X1234", "GET"),
        ("GET", "/api/v1/events/batch", "POST"),
        ("DELETE", "/api/v1/track/X1234", "GET"),
        ("GET", "/api/v1/track/X1234/verify", "POST"),
    ],
)
def test_a_wrong_method_is_a_405_problem_that_names_the_allowed_ones(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)

    assert_problem(response, 405)
    assert allowed in response.headers["allow"]


def test_every_kind_of_error_is_a_problem_whose_status_matches_the_http_status(
    client: TestClient, shop_key: str, number: str, vault: Vault
) -> None:
    from parcelvault.services import tenants

    reader = tenants.issue_key(vault=vault, name="shop-a", scopes=("shipments:read",))
    answers = [
        client.post("/api/v1/shipments", content=b"{", headers=json_headers(shop_key)),
        client.post("/api/v1/shipments", json=shipment_payload()),
        client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(reader)),
        client.post(f"/api/v1/track/{number}/verify", json={"postcode": "ZZ9 9ZZ"}),
        client.get("/api/v1/track/NOSUCH0001"),
        client.patch("/api/v1/shipments"),
        client.post("/api/v1/shipments", content=b" " * (MIB + 1), headers=json_headers(shop_key)),
        client.post("/api/v1/shipments", content=b"{}", headers=bearer(shop_key)),
        client.post("/api/v1/shipments", json={}, headers=bearer(shop_key)),
    ]
    for _ in range(4):
        client.post(f"/api/v1/track/{number}/verify", json={"postcode": "ZZ9 9ZZ"})
    answers.append(client.post(f"/api/v1/track/{number}/verify", json={"postcode": "ZZ9 9ZZ"}))

    statuses = [answer.status_code for answer in answers]
    assert statuses == [400, 401, 403, 403, 404, 405, 413, 415, 422, 429]
    for answer in answers:
        assert_problem(answer, answer.status_code)
        assert answer.headers["cache-control"] == "no-store"


# --- arbitrary JSON ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


VALID_ITEM = {
    **an_event("fuzz"),
    "tracking_number": "FUZZ0001",
    "location": {"country": "GB", "city": "Leeds", "facility": "LDS2"},
    "proof": {"received_by": "R", "geo": {"lat": 1.5, "lon": 2.5}},
}
VALID_SHIPMENT = shipment_payload(service="std")
SHIPMENT_PATHS = leaves(VALID_SHIPMENT)
BATCH_PATHS = leaves({"events": [VALID_ITEM]})


@FUZZ
@given(body=json_values)
def test_arbitrary_json_never_makes_create_fail_with_a_5xx(
    client: TestClient, shop_key: str, body: Any
) -> None:
    response = client.post(
        "/api/v1/shipments", content=json.dumps(body), headers=json_headers(shop_key)
    )

    assert response.status_code in (201, 422), response.text


@FUZZ
@given(items=st.lists(json_values, max_size=4))
def test_arbitrary_json_items_never_make_a_batch_fail_with_a_5xx(
    client: TestClient, shop_key: str, items: list[Any]
) -> None:
    response = client.post(
        "/api/v1/events/batch",
        content=json.dumps({"events": items}),
        headers=json_headers(shop_key),
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


@FUZZ
@given(data=st.data())
def test_a_valid_shipment_with_any_one_value_replaced_never_gives_a_5xx(
    any_client: TestClient, any_shop_key: str, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(SHIPMENT_PATHS))
    body = replaced(VALID_SHIPMENT, path, data.draw(json_values))

    response = any_client.post("/api/v1/shipments", json=body, headers=bearer(any_shop_key))

    assert response.status_code in (201, 422), response.text


@FUZZ
@given(data=st.data())
def test_a_valid_batch_with_any_one_value_replaced_never_gives_a_5xx(
    any_client: TestClient, any_shop_key: str, data: st.DataObject
) -> None:
    any_client.post(
        "/api/v1/shipments",
        json=shipment_payload(tracking_number="FUZZ0001"),
        headers=bearer(any_shop_key),
    )
    path = data.draw(st.sampled_from(BATCH_PATHS))
    item = {**VALID_ITEM, "event_id": data.draw(st.uuids()).hex}
    body = replaced({"events": [item]}, path, data.draw(json_values))

    response = any_client.post("/api/v1/events/batch", json=body, headers=bearer(any_shop_key))

    assert response.status_code in (200, 422), response.text
