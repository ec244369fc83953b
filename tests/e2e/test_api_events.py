"""Scan events over HTTP: idempotency, the current status by event time, and the
all-or-nothing batch. Storage semantics, so every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer, shipment_payload

NOW = datetime.now(UTC).replace(microsecond=0)


def at(hours_ago: float, offset_hours: int = 0) -> str:
    """An ISO time `hours_ago` before the test run, written in a UTC offset."""
    when = NOW - timedelta(hours=hours_ago)
    return when.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def event(
    event_id: str, status: str = "in_transit", when: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "time": when or at(2), "status": status, **extra}


def create(client: TestClient, key: str, **overrides: Any) -> str:
    response = client.post(
        "/api/v1/shipments", json=shipment_payload(**overrides), headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    number: str = response.json()["tracking_number"]
    return number


def post(client: TestClient, key: str, number: str, body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/shipments/{number}/events", json=body, headers=bearer(key))


def batch(client: TestClient, key: str, items: list[dict[str, Any]]) -> Any:
    return client.post("/api/v1/events/batch", json={"events": items}, headers=bearer(key))


def view(client: TestClient, key: str, number: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/shipments/{number}", headers=bearer(key))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# --- one event ----------------------------------------------------------------------


def test_an_event_is_accepted_with_201_and_becomes_the_status(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)

    response = post(any_client, any_shop_key, number, event("scan-1", "in_transit", at(2)))

    assert response.status_code == 201
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert response.headers["cache-control"] == "private, no-store"
    shown = view(any_client, any_shop_key, number)
    assert shown["status"] == "in_transit"
    assert shown["stage"] == 1
    assert [e["status"] for e in shown["events"]] == ["in_transit"]


def test_the_same_event_id_again_answers_200_and_changes_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    post(any_client, any_shop_key, number, event("scan-1", "in_transit", at(2)))
    before = view(any_client, any_shop_key, number)

    replay = post(any_client, any_shop_key, number, event("scan-1", "in_transit", at(2)))
    altered = post(any_client, any_shop_key, number, event("scan-1", "delivered", at(1)))

    assert replay.status_code == 200
    assert replay.json() == {"accepted": 0, "duplicates": 1}
    assert altered.status_code == 200
    assert altered.json() == {"accepted": 0, "duplicates": 1}
    assert view(any_client, any_shop_key, number) == before


def test_the_status_follows_the_latest_event_time_not_the_latest_arrival(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    post(any_client, any_shop_key, number, event("later", "out_for_delivery", at(1)))

    post(any_client, any_shop_key, number, event("earlier", "in_transit", at(5)))

    shown = view(any_client, any_shop_key, number)
    assert shown["status"] == "out_for_delivery"
    assert datetime.fromisoformat(shown["status_at"]) == NOW - timedelta(hours=1)
    assert [e["status"] for e in shown["events"]] == ["out_for_delivery", "in_transit"]


def test_event_times_are_compared_in_utc_whatever_offset_they_were_written_in(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    # 1 h ago in UTC is later than 2 h ago written at +05:00, whose wall clock reads later.
    post(any_client, any_shop_key, number, event("utc", "out_for_delivery", at(1, 0)))

    post(any_client, any_shop_key, number, event("east", "in_transit", at(2, 5)))

    shown = view(any_client, any_shop_key, number)
    assert shown["status"] == "out_for_delivery"
    assert [e["time"] for e in shown["events"]] == [at(1, 0), at(2, 5)]


def test_a_timeline_keeps_the_offset_each_scan_was_made_in(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)

    post(any_client, any_shop_key, number, event("west", "in_transit", at(3, -5)))

    assert view(any_client, any_shop_key, number)["events"][0]["time"] == at(3, -5)


def test_an_equal_time_tie_goes_to_the_later_arrival(
    any_client: TestClient, any_shop_key: str
) -> None:
    first = create(any_client, any_shop_key)
    second = create(any_client, any_shop_key)
    same = at(2)

    post(any_client, any_shop_key, first, event("a1", "in_transit", same))
    post(any_client, any_shop_key, first, event("a2", "exception", same, reason="weather"))
    post(any_client, any_shop_key, second, event("b1", "exception", same, reason="weather"))
    post(any_client, any_shop_key, second, event("b2", "in_transit", same))

    assert view(any_client, any_shop_key, first)["status"] == "exception"
    assert view(any_client, any_shop_key, second)["status"] == "in_transit"


def test_an_equal_time_tie_inside_one_batch_goes_to_the_later_item(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    same = at(2)

    response = batch(
        any_client,
        any_shop_key,
        [
            {**event("t1", "in_transit", same), "tracking_number": number},
            {**event("t2", "available_for_pickup", same), "tracking_number": number},
        ],
    )

    assert response.status_code == 200
    assert view(any_client, any_shop_key, number)["status"] == "available_for_pickup"


def test_a_reason_goes_with_a_problem_status_and_is_labelled(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)

    response = post(
        any_client,
        any_shop_key,
        number,
        event("fa", "failed_attempt", at(1), reason="recipient_absent"),
    )

    assert response.status_code == 201
    latest = view(any_client, any_shop_key, number)["events"][0]
    assert (latest["reason"], latest["reason_label"]) == (
        "recipient_absent",
        "nobody was available",
    )


def test_an_event_a_few_minutes_ahead_of_the_clock_is_accepted_but_not_one_far_ahead(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    far = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()

    accepted = post(any_client, any_shop_key, number, event("soon", "in_transit", soon))
    refused = post(any_client, any_shop_key, number, event("far", "in_transit", far))

    assert accepted.status_code == 201
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"loc": ["time"], "message": "is more than 10 minutes in the future"}
    ]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (event("x", "lost_in_space"), ["status"]),
        (event("x", when="2026-01-01T10:00:00"), ["time"]),
        (event("x", "in_transit", reason="weather"), ["reason"]),
        (event("x", colour="red"), ["colour"]),
        (event("has space"), ["event_id"]),
        ({**event("x"), "time": ["2026-01-01T10:00:00Z"]}, ["time"]),
        ({"time": at(1), "status": "in_transit"}, ["event_id"]),
    ],
)
def test_a_bad_single_event_is_422_naming_the_field_and_writes_nothing(
    any_client: TestClient, any_shop_key: str, body: dict[str, Any], loc: list[Any]
) -> None:
    number = create(any_client, any_shop_key)

    response = post(any_client, any_shop_key, number, body)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["errors"]] == [loc]
    assert view(any_client, any_shop_key, number)["events"] == []


def test_a_time_given_as_a_number_is_refused(any_client: TestClient, any_shop_key: str) -> None:
    number = create(any_client, any_shop_key)

    response = post(any_client, any_shop_key, number, {**event("x"), "time": 1_700_000_000})

    assert response.status_code == 422
    assert view(any_client, any_shop_key, number)["events"] == []


def test_an_event_for_an_unknown_number_is_404(any_client: TestClient, any_shop_key: str) -> None:
    response = post(any_client, any_shop_key, "NOSUCH0001", event("x"))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


# --- batches ------------------------------------------------------------------------


def test_a_batch_is_stored_and_replaying_it_changes_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    first = create(any_client, any_shop_key)
    second = create(any_client, any_shop_key)
    items = [
        {**event("b-1", "info_received", at(5)), "tracking_number": first},
        {**event("b-2", "in_transit", at(4)), "tracking_number": first},
        {**event("b-3", "in_transit", at(3)), "tracking_number": second},
        {**event("b-4", "out_for_delivery", at(2)), "tracking_number": second.lower()},
    ]

    stored = batch(any_client, any_shop_key, items)
    before = [view(any_client, any_shop_key, n) for n in (first, second)]
    replayed = batch(any_client, any_shop_key, items)

    assert stored.status_code == 200
    assert stored.json() == {"accepted": 4, "duplicates": 0}
    assert replayed.status_code == 200
    assert replayed.json() == {"accepted": 0, "duplicates": 4}
    assert [view(any_client, any_shop_key, n) for n in (first, second)] == before
    assert [b["status"] for b in before] == ["in_transit", "out_for_delivery"]


@pytest.mark.parametrize(
    "media_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_a_batch_sent_as_any_json_media_type_is_stored_and_answered_privately(
    any_client: TestClient, any_shop_key: str, media_type: str
) -> None:
    number = create(any_client, any_shop_key)
    items = [
        {**event(f"m-{i}", "in_transit", at(3 - i)), "tracking_number": number} for i in (0, 1)
    ]
    headers = {**bearer(any_shop_key), "Content-Type": media_type}

    response = any_client.post(
        "/api/v1/events/batch", content=orjson.dumps({"events": items}), headers=headers
    )

    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 0}
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["vary"] == "Cookie, Authorization"
    assert response.headers["content-type"] == "application/json"
    assert len(view(any_client, any_shop_key, number)["events"]) == 2


def test_a_batch_that_is_not_sent_as_json_is_refused_and_stores_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    body = orjson.dumps({"events": [{**event("t-0"), "tracking_number": number}]})
    headers = {**bearer(any_shop_key), "Content-Type": "text/plain"}

    response = any_client.post("/api/v1/events/batch", content=body, headers=headers)

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert view(any_client, any_shop_key, number)["events"] == []


def test_a_batch_that_repeats_some_events_stores_only_the_new_ones(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    old = {**event("old", "in_transit", at(3)), "tracking_number": number}
    batch(any_client, any_shop_key, [old])

    response = batch(
        any_client,
        any_shop_key,
        [old, {**event("new", "delivered", at(1)), "tracking_number": number}],
    )

    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert len(view(any_client, any_shop_key, number)["events"]) == 2


def test_one_bad_item_refuses_the_whole_batch_and_every_bad_item_is_listed(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    future = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()

    def item(event_id: str, **fields: Any) -> dict[str, Any]:
        return {**event(event_id, "in_transit", at(2)), "tracking_number": number, **fields}

    items = [
        item("good-0"),
        item("bad-1", status="lost_in_space"),
        item("bad-2", time="2026-05-01T09:30:00"),
        item("good-3"),
        item("bad-4", time=future),
        item("bad-5", reason="weather"),
        item("bad-6", tracking_number="NOSUCH0001"),
        item("bad-7", location={"city": ["Leeds"]}),
        item("bad-8", colour="red"),
        item("bad-9", status="delivered", proof={"geo": {"lat": "north", "lon": 0}}),
        item("good-10"),
    ]

    response = batch(any_client, any_shop_key, items)

    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in problem["errors"]] == [
        ["events", 1, "status"],
        ["events", 2, "time"],
        ["events", 4, "time"],
        ["events", 5, "reason"],
        ["events", 6, "tracking_number"],
        ["events", 7, "location", "city"],
        ["events", 8, "colour"],
        ["events", 9, "proof", "geo", "lat"],
    ]
    shown = view(any_client, any_shop_key, number)
    assert shown["events"] == []
    assert shown["status"] == "pending"


def test_a_batch_of_only_rule_breaking_items_lists_each_of_them(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    items = [
        {**event("r-0", "in_transit", future), "tracking_number": number},
        {**event("r-1", "in_transit", at(1)), "tracking_number": number},
        {**event("r-2", "delivered", at(1), reason="lost"), "tracking_number": number},
        {**event("r-3", "in_transit", at(1)), "tracking_number": "NOSUCH0002"},
    ]

    response = batch(any_client, any_shop_key, items)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"loc": ["events", 0, "time"], "message": "is more than 10 minutes in the future"},
        {
            "loc": ["events", 2, "reason"],
            "message": "only exception and failed_attempt events take a reason",
        },
        {
            "loc": ["events", 3, "tracking_number"],
            "message": "no shipment of yours has this number",
        },
    ]
    assert view(any_client, any_shop_key, number)["events"] == []


def test_a_batch_item_that_repeats_an_id_in_the_same_batch_counts_as_a_duplicate(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    once = {**event("twice", "in_transit", at(2)), "tracking_number": number}

    response = batch(any_client, any_shop_key, [once, once])

    assert response.json() == {"accepted": 1, "duplicates": 1}


def test_a_batch_of_exactly_1000_events_is_accepted(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    items = [
        {**event(f"n-{i}", "in_transit", at(100 - i / 20)), "tracking_number": number}
        for i in range(1000)
    ]

    response = batch(any_client, any_shop_key, items)

    assert response.status_code == 200
    assert response.json() == {"accepted": 1000, "duplicates": 0}
    assert len(view(any_client, any_shop_key, number)["events"]) == 1000


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"events": []}, ["events"]),
        ({}, ["events"]),
        ({"events": {"0": {}}}, ["events"]),
        ({"events": [], "extra": 1}, None),
        ([], []),
    ],
)
def test_a_batch_envelope_that_is_empty_or_malformed_is_422(
    any_client: TestClient, any_shop_key: str, body: Any, loc: list[Any] | None
) -> None:
    response = any_client.post("/api/v1/events/batch", json=body, headers=bearer(any_shop_key))

    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["errors"]]
    assert loc is None or locations == [loc]


def test_a_batch_of_more_than_1000_events_is_422_and_writes_nothing(
    any_client: TestClient, any_shop_key: str
) -> None:
    number = create(any_client, any_shop_key)
    items = [
        {**event(f"o-{i}", "in_transit", at(2)), "tracking_number": number} for i in range(1001)
    ]

    response = batch(any_client, any_shop_key, items)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["errors"]] == [["events"]]
    assert view(any_client, any_shop_key, number)["events"] == []
