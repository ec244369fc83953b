"""The courier tier over HTTP: a tenant makes a day's route, the courier's device
reads the address of each stop only while the stop is active, and every such read is
an access record. The clock is the test's, so the windows are exact."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from parcelvault.adapters.db.tables import access_records, route_stops, routes
from parcelvault.entrypoints.api import courier_routes
from parcelvault.services import tenants
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, shipment_payload
from tests.races import erasure_during_the_first_view, subject_of

DAY = "2031-03-10"
START = "2031-03-10T08:00:00+01:00"
BEFORE_START = datetime(2031, 3, 10, 6, 0, tzinfo=UTC)
DURING = datetime(2031, 3, 10, 7, 30, tzinfo=UTC)
END_OF_DAY = datetime(2031, 3, 10, 23, 0, tzinfo=UTC)
COURIER_FIELDS = "destination.notes,destination.postcode,destination.street,recipient.name"


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(vault: Vault) -> Clock:
    clock = Clock(BEFORE_START)
    vault.clock = clock
    return clock


@pytest.fixture
def any_clock(any_vault: Vault) -> Clock:
    clock = Clock(BEFORE_START)
    any_vault.clock = clock
    return clock


def create(client: TestClient, key: str, body: dict[str, Any] | None = None) -> str:
    response = client.post("/api/v1/shipments", json=body or with_notes(), headers=bearer(key))
    assert response.status_code == 201, response.text
    number: str = response.json()["tracking_number"]
    return number


def with_notes(body: dict[str, Any] | None = None, notes: str = "Blue door") -> dict[str, Any]:
    body = body or shipment_payload()
    body["destination"]["notes"] = notes
    return body


def make_route(
    client: TestClient, key: str, stops: list[str], date: str = DAY, starts_at: str = START
) -> Any:
    return client.post(
        "/api/v1/routes",
        json={"date": date, "starts_at": starts_at, "stops": stops},
        headers=bearer(key),
    )


def route_of(client: TestClient, key: str, stops: list[str]) -> dict[str, Any]:
    response = make_route(client, key, stops)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def stops(client: TestClient, token: str) -> Any:
    return client.get("/api/v1/courier/stops", headers=bearer(token))


def complete(client: TestClient, token: str, number: str) -> Any:
    return client.post(f"/api/v1/courier/stops/{number}/complete", headers=bearer(token))


def count(vault: Vault, table: Any) -> int:
    with vault.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def courier_records(vault: Vault) -> list[Any]:
    with vault.engine.connect() as connection:
        query = (
            select(access_records)
            .where(access_records.c.tier == "courier")
            .order_by(access_records.c.id)
        )
        return list(connection.execute(query).all())


# --- making a route ----------------------------------------------------------------------


def test_a_route_gets_a_token_shown_once_of_which_only_the_hash_is_stored(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    numbers = [create(any_client, any_shop_key) for _ in range(2)]

    response = make_route(any_client, any_shop_key, numbers)

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"route_id", "token", "ends_at", "stops"}
    assert body["stops"] == 2
    assert body["ends_at"] == "2031-03-11T00:00:00+01:00"
    with any_vault.engine.connect() as connection:
        route = connection.execute(select(routes)).one()
        positions = connection.execute(
            select(route_stops.c.position).order_by(route_stops.c.position)
        ).scalars()
        assert list(positions) == [1, 2]
    assert route.id == body["route_id"]
    assert route.token_hash == hashlib.sha256(body["token"].encode()).digest()
    assert body["token"] not in repr(tuple(route))
    assert route.ends_at == datetime(2031, 3, 10, 23, 0, tzinfo=UTC)


def test_route_creation_lists_every_problem_at_once_and_writes_nothing(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    own = create(any_client, any_shop_key)
    shop_b = tenants.create_tenant(vault=any_vault, name="shop-b")
    theirs = create(any_client, shop_b)

    response = make_route(
        any_client,
        any_shop_key,
        [own, "NOSUCH0001", theirs, own.lower(), "not a number!"],
        date="2031-03-09",
        starts_at="2031-03-09T08:00:00",
    )

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["loc"] for e in errors] == [
        ["date"],
        ["starts_at"],
        ["stops", 1],
        ["stops", 2],
        ["stops", 3],
        ["stops", 4],
    ]
    assert errors[0]["message"] == "is in the past"
    assert "UTC offset" in errors[1]["message"]
    assert errors[2]["message"] == errors[3]["message"] == "no shipment of yours has this number"
    assert errors[4]["message"] == "appears twice in this route"
    assert errors[5]["message"] == "is not a tracking number"
    assert count(any_vault, routes) == count(any_vault, route_stops) == 0


def test_a_route_takes_at_most_two_hundred_stops(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock
) -> None:
    numbers = [create(client, shop_key, shipment_payload()) for _ in range(201)]

    too_many = make_route(client, shop_key, numbers)
    just_enough = make_route(client, shop_key, numbers[:200])

    assert too_many.status_code == 422
    assert too_many.json()["errors"] == [
        {"loc": ["stops"], "message": "has 201 stops; a route takes at most 200"}
    ]
    assert just_enough.status_code == 201, just_enough.text
    assert just_enough.json()["stops"] == 200
    assert count(vault, route_stops) == 200


@pytest.mark.parametrize(
    ("date", "starts_at", "loc", "message"),
    [
        (DAY, "2031-03-11T08:00:00+01:00", ["starts_at"], "must fall on the route's date"),
        (DAY, "2031-03-10T08:00:00", ["starts_at"], "needs a UTC offset"),
        ("2031-03-09", "2031-03-09T23:30:00+01:00", ["date"], "is in the past"),
    ],
)
def test_a_route_time_that_breaks_a_rule_is_refused(
    client: TestClient,
    shop_key: str,
    vault: Vault,
    clock: Clock,
    date: str,
    starts_at: str,
    loc: list[str],
    message: str,
) -> None:
    number = create(client, shop_key)

    response = make_route(client, shop_key, [number], date=date, starts_at=starts_at)

    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == loc
    assert error["message"].startswith(message)
    assert count(vault, routes) == 0


def test_the_past_is_judged_in_the_offset_of_the_start(
    client: TestClient, shop_key: str, clock: Clock
) -> None:
    number = create(client, shop_key)
    clock.now = datetime(2031, 3, 10, 23, 30, tzinfo=UTC)

    in_europe = make_route(client, shop_key, [number], starts_at="2031-03-10T08:00:00+01:00")
    in_new_york = make_route(client, shop_key, [number], starts_at="2031-03-10T08:00:00-05:00")

    assert in_europe.status_code == 422
    assert in_europe.json()["errors"][0]["loc"] == ["date"]
    assert in_new_york.status_code == 201, in_new_york.text
    assert in_new_york.json()["ends_at"] == "2031-03-11T00:00:00-05:00"


def test_a_route_needs_a_stop_and_wire_errors_are_named(
    client: TestClient, shop_key: str, clock: Clock
) -> None:
    empty = make_route(client, shop_key, [])
    malformed = client.post(
        "/api/v1/routes",
        json={"date": "10/03/2031", "starts_at": 1925000000, "stops": "X", "extra": 1},
        headers=bearer(shop_key),
    )

    assert empty.status_code == 422
    assert empty.json()["errors"] == [{"loc": ["stops"], "message": "needs at least one stop"}]
    assert malformed.status_code == 422
    assert sorted(e["loc"][0] for e in malformed.json()["errors"]) == [
        "date",
        "extra",
        "starts_at",
        "stops",
    ]


def test_a_delivered_parcel_cannot_be_put_on_a_route(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock
) -> None:
    number = create(client, shop_key)
    delivered = {
        "event_id": "d",
        "time": (clock.now - timedelta(hours=1)).isoformat(),
        "status": "delivered",
    }
    client.post(f"/api/v1/shipments/{number}/events", json=delivered, headers=bearer(shop_key))

    response = make_route(client, shop_key, [number])

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["stops", 0]
    assert count(vault, routes) == 0


def test_making_a_route_needs_the_events_write_scope(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock
) -> None:
    number = create(client, shop_key)
    reader = tenants.issue_key(vault=vault, name="shop-a", scopes=("shipments:read",))

    assert make_route(client, reader, [number]).status_code == 403
    assert make_route(client, "pv_not-a-key", [number]).status_code == 401
    assert count(vault, routes) == 0


def test_a_carrier_makes_a_route_of_the_shipments_it_carries(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    carrier = tenants.create_tenant(
        vault=any_vault, name="fast-couriers", scopes=("events:write", "shipments:read")
    )
    carried = create(
        any_client, any_shop_key, with_notes(shipment_payload(carrier="fast-couriers"))
    )
    not_carried = create(any_client, any_shop_key)

    refused = make_route(any_client, carrier, [carried, not_carried])
    made = make_route(any_client, carrier, [carried])
    any_clock.now = DURING

    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["errors"]] == [["stops", 1]]
    assert made.status_code == 201, made.text
    (stop,) = stops(any_client, made.json()["token"]).json()["stops"]
    assert stop["shipment"]["tracking_number"] == carried


# --- what the courier sees -----------------------------------------------------------------


def test_before_the_route_starts_the_courier_sees_no_address(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    canaries = Canaries()
    number = create(any_client, any_shop_key, with_notes(canaries.shipment()))
    token = route_of(any_client, any_shop_key, [number])["token"]

    response = stops(any_client, token)

    assert response.status_code == 200, response.text
    assert response.json()["stops"] == [{"position": 1, "status": "upcoming"}]
    assert canaries.found_in(response.content) == []
    assert courier_records(any_vault) == []


def test_during_the_route_the_courier_sees_address_notes_and_initials_only(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    canaries = Canaries()
    number = create(any_client, any_shop_key, with_notes(canaries.shipment(), "Leave by the shed"))
    made = route_of(any_client, any_shop_key, [number])
    any_clock.now = DURING

    response = stops(any_client, made["token"])

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    body = response.json()
    assert body["route_id"] == made["route_id"]
    assert body["date"] == DAY
    (stop,) = body["stops"]
    assert stop["position"] == 1
    assert stop["status"] == "active"
    shipment = stop["shipment"]
    assert shipment["tracking_number"] == number
    assert shipment["recipient"] == {"name": "Z. C."}
    assert shipment["destination"] == {
        "country": "GB",
        "region": None,
        "city": "Leeds",
        "postcode": canaries.postcode,
        "street": [canaries.street],
        "notes": "Leave by the shed",
    }
    assert sorted(canaries.found_in(response.content)) == ["postcode", "street"]


def test_every_courier_read_of_personal_fields_is_an_access_record_of_the_route(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    numbers = [create(any_client, any_shop_key) for _ in range(2)]
    made = route_of(any_client, any_shop_key, numbers)
    any_clock.now = DURING

    stops(any_client, made["token"])
    stops(any_client, made["token"])

    records = courier_records(any_vault)
    assert len(records) == 4
    assert {r.actor_kind for r in records} == {"route"}
    assert {r.actor_id for r in records} == {made["route_id"]}
    assert {r.fields for r in records} == {COURIER_FIELDS}
    assert {r.at for r in records} == {DURING}


def test_completing_a_stop_takes_its_address_away_at_once(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    canaries = Canaries()
    first = create(any_client, any_shop_key, with_notes(canaries.shipment()))
    second = create(any_client, any_shop_key)
    token = route_of(any_client, any_shop_key, [first, second])["token"]
    any_clock.now = DURING

    done = complete(any_client, token, first)
    again = complete(any_client, token, first.lower())
    before = len(courier_records(any_vault))
    after = stops(any_client, token)

    assert done.status_code == 200, done.text
    assert done.json() == {
        "position": 1,
        "status": "completed",
        "completed_at": DURING.isoformat(),
    }
    assert again.json() == done.json()
    first_stop, second_stop = after.json()["stops"]
    assert first_stop == {"position": 1, "status": "completed"}
    assert second_stop["shipment"]["tracking_number"] == second
    assert canaries.found_in(after.content) == []
    assert len(courier_records(any_vault)) == before + 1


def test_after_the_day_ends_the_token_opens_nothing(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    canaries = Canaries()
    number = create(any_client, any_shop_key, with_notes(canaries.shipment()))
    token = route_of(any_client, any_shop_key, [number])["token"]

    any_clock.now = END_OF_DAY - timedelta(seconds=1)
    last_moment = stops(any_client, token)
    any_clock.now = END_OF_DAY
    ended = stops(any_client, token)
    ended_complete = complete(any_client, token, number)

    assert last_moment.status_code == 200
    assert last_moment.json()["stops"][0]["status"] == "active"
    assert (ended.status_code, ended_complete.status_code) == (401, 401)
    assert canaries.found_in(ended.content) == []


def test_a_stop_whose_parcel_was_delivered_closes_without_the_courier(
    client: TestClient, shop_key: str, clock: Clock
) -> None:
    number = create(client, shop_key)
    token = route_of(client, shop_key, [number])["token"]
    clock.now = DURING
    delivered = {"event_id": "d", "time": DURING.isoformat(), "status": "delivered"}
    posted = client.post(
        f"/api/v1/shipments/{number}/events", json=delivered, headers=bearer(shop_key)
    )
    assert posted.status_code == 201, posted.text

    assert stops(client, token).json()["stops"] == [{"position": 1, "status": "closed"}]


def test_completing_a_stop_before_the_route_starts_is_a_conflict(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock
) -> None:
    number = create(client, shop_key)
    token = route_of(client, shop_key, [number])["token"]

    response = complete(client, token, number)

    assert response.status_code == 409
    with vault.engine.connect() as connection:
        assert connection.execute(select(route_stops.c.completed_at)).scalar_one() is None


# --- tokens --------------------------------------------------------------------------------


def test_unknown_tampered_revoked_and_expired_tokens_get_one_and_the_same_401(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    number = create(any_client, any_shop_key)
    revoked = route_of(any_client, any_shop_key, [number])
    live = route_of(any_client, any_shop_key, [number])["token"]
    any_clock.now = DURING
    assert (
        any_client.delete(
            f"/api/v1/routes/{revoked['route_id']}", headers=bearer(any_shop_key)
        ).status_code
        == 204
    )
    tampered = live[:-1] + ("A" if live[-1] != "A" else "B")

    answers = [
        stops(any_client, revoked["token"]),
        stops(any_client, tampered),
        stops(any_client, "pvd_" + "x" * 43),
        stops(any_client, any_shop_key),
        any_client.get("/api/v1/courier/stops"),
        any_client.get("/api/v1/courier/stops", headers={"Authorization": f"Basic {live}"}),
        complete(any_client, revoked["token"], number),
        complete(any_client, tampered, number),
    ]
    any_clock.now = END_OF_DAY
    answers.append(stops(any_client, live))

    assert [a.status_code for a in answers] == [401] * 9
    assert len({a.content for a in answers}) == 1
    assert answers[0].headers["www-authenticate"] == "Bearer"
    assert answers[0].json()["type"] == "/problems/unauthenticated"


def test_only_the_tenant_that_made_a_route_can_revoke_it(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, any_clock: Clock
) -> None:
    number = create(any_client, any_shop_key)
    made = route_of(any_client, any_shop_key, [number])
    shop_b = tenants.create_tenant(vault=any_vault, name="shop-b")
    any_clock.now = DURING

    by_other = any_client.delete(f"/api/v1/routes/{made['route_id']}", headers=bearer(shop_b))
    unknown = any_client.delete(f"/api/v1/routes/{'0' * 32}", headers=bearer(shop_b))
    still = stops(any_client, made["token"])
    by_maker = any_client.delete(f"/api/v1/routes/{made['route_id']}", headers=bearer(any_shop_key))
    twice = any_client.delete(f"/api/v1/routes/{made['route_id']}", headers=bearer(any_shop_key))

    assert by_other.status_code == 404
    assert by_other.content == unknown.content
    assert still.status_code == 200
    assert (by_maker.status_code, twice.status_code) == (204, 204)
    assert stops(any_client, made["token"]).status_code == 401


def test_a_token_never_shows_or_completes_another_routes_stops(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    mine, other = create(any_client, any_shop_key), create(any_client, any_shop_key)
    token_a = route_of(any_client, any_shop_key, [mine])["token"]
    token_b = route_of(any_client, any_shop_key, [other])["token"]
    any_clock.now = DURING

    seen_by_a = stops(any_client, token_a).json()["stops"]
    reach = complete(any_client, token_a, other)
    never = complete(any_client, token_a, "NOSUCH0001")

    assert [s["shipment"]["tracking_number"] for s in seen_by_a] == [mine]
    assert reach.status_code == 404
    assert reach.content == never.content
    (seen_by_b,) = stops(any_client, token_b).json()["stops"]
    assert seen_by_b["status"] == "active"


# --- canaries and documentation ----------------------------------------------------------------


def test_the_courier_never_sees_the_contact_details_or_the_full_name(
    any_client: TestClient, any_shop_key: str, any_clock: Clock
) -> None:
    canaries = Canaries()
    number = create(any_client, any_shop_key, with_notes(canaries.shipment()))
    token = route_of(any_client, any_shop_key, [number])["token"]
    any_clock.now = DURING
    proof = {"received_by": canaries.received_by, "signature": canaries.signature}
    attempt = {
        "event_id": "a",
        "time": DURING.isoformat(),
        "status": "failed_attempt",
        "reason": "recipient_absent",
        "proof": proof,
    }
    any_client.post(
        f"/api/v1/shipments/{number}/events", json=attempt, headers=bearer(any_shop_key)
    )

    response = stops(any_client, token)

    assert response.json()["stops"][0]["status"] == "active"
    assert sorted(canaries.found_in(response.content)) == ["postcode", "street"]


def test_no_canary_appears_in_a_courier_or_route_error_body(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock
) -> None:
    canaries = Canaries()
    number = create(client, shop_key, with_notes(canaries.shipment()))
    token = route_of(client, shop_key, [number])["token"]

    answers = [
        complete(client, token, number),
        make_route(client, shop_key, [number, canaries.street, canaries.postcode]),
        make_route(client, shop_key, [number], starts_at=canaries.email),
        complete(client, token, canaries.postcode),
        stops(client, canaries.name),
    ]
    clock.now = END_OF_DAY
    answers.append(stops(client, token))

    assert [a.status_code for a in answers] == [409, 422, 422, 404, 401, 401]
    for answer in answers:
        assert canaries.found_in(answer.content) == [], answer.text


def test_the_courier_answers_match_their_documented_models(
    client: TestClient, shop_key: str, clock: Clock
) -> None:
    number, upcoming = create(client, shop_key), create(client, shop_key)
    made = make_route(client, shop_key, [number, upcoming])
    clock.now = DURING
    done = complete(client, made.json()["token"], number)
    listed = stops(client, made.json()["token"])

    courier_routes.RouteCreatedOut.model_validate(made.json())
    courier_routes.StopCompletedOut.model_validate(done.json())
    route = courier_routes.CourierRouteOut.model_validate(listed.json())
    assert [s.status for s in route.stops] == ["completed", "active"]


def test_the_openapi_document_describes_the_courier_endpoints(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]

    def model_of(path: str, method: str, status: str) -> str:
        content = paths[path][method]["responses"][status]["content"]
        ref: str = content["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert model_of("/api/v1/routes", "post", "201") == "RouteCreatedOut"
    assert model_of("/api/v1/courier/stops", "get", "200") == "CourierRouteOut"
    assert (
        model_of("/api/v1/courier/stops/{tracking_number}/complete", "post", "200")
        == "StopCompletedOut"
    )
    assert "204" in paths["/api/v1/routes/{route_id}"]["delete"]["responses"]
    for path, method in [("/api/v1/courier/stops", "get"), ("/api/v1/routes", "post")]:
        assert "application/problem+json" in paths[path][method]["responses"]["401"]["content"]
    route_in = document["components"]["schemas"]["RouteIn"]
    assert set(route_in["properties"]) == {"date", "starts_at", "stops"}
    assert route_in["properties"]["stops"]["maxItems"] == 200


def test_an_erasure_started_while_a_route_is_read_waits_for_its_records_then_moves_them(
    client: TestClient, shop_key: str, vault: Vault, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = create(client, shop_key)
    made = route_of(client, shop_key, [number])
    clock.now = DURING
    subject = subject_of(vault, number)
    meanwhile = erasure_during_the_first_view(monkeypatch, vault, number)
    read = stops(client, made["token"])
    meanwhile.join()
    assert read.status_code == 200, read.text
    assert read.json()["stops"][0]["shipment"]["destination"]["street"] == ["12 Example Street"]
    assert meanwhile.still_waiting == [True]
    records = courier_records(vault)
    assert len(records) == 1
    assert records[0].subject_id != subject
