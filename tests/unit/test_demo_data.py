from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice

import pytest
from pydantic import TypeAdapter

from parcelvault.adapters.wire import EventLine, ImportLine, ShipmentLine
from parcelvault.domain import tracking_numbers
from parcelvault.services import demo_data

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # an hour before summer time starts
ADAPTER: TypeAdapter[ShipmentLine | EventLine] = TypeAdapter(ImportLine)


@pytest.fixture(scope="module")
def records() -> list[dict[str, object]]:
    return list(demo_data.generate(seed=7, count=1000, now=NOW))


def _time(record: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(record["time"]))


def _current_status(records: list[dict[str, object]]) -> dict[object, object]:
    status: dict[object, object] = {}
    for record in records:
        number = record["tracking_number"]
        status[number] = "pending" if record["type"] == "shipment" else record["status"]
    return status


def test_the_same_seed_and_time_give_the_same_records(records: list[dict[str, object]]) -> None:
    assert list(demo_data.generate(seed=7, count=1000, now=NOW)) == records


def test_another_seed_gives_other_shipments(records: list[dict[str, object]]) -> None:
    other = list(islice(demo_data.generate(seed=8, count=50, now=NOW), 50))
    assert {r["tracking_number"] for r in other}.isdisjoint({r["tracking_number"] for r in records})


def test_every_record_validates_as_an_import_line(records: list[dict[str, object]]) -> None:
    kinds = Counter(type(ADAPTER.validate_python(record)).__name__ for record in records)
    assert kinds["ShipmentLine"] == 1000
    assert kinds["EventLine"] > 5000


def test_every_shipment_has_a_valid_issued_number_and_comes_before_its_events(
    records: list[dict[str, object]],
) -> None:
    seen: set[object] = set()
    for record in records:
        number = record["tracking_number"]
        if record["type"] == "shipment":
            assert isinstance(number, str)
            assert tracking_numbers.is_valid_issued(number)
            assert number not in seen
            seen.add(number)
        else:
            assert number in seen


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        datetime(2026, 10, 25, 0, 59, 59, tzinfo=UTC),  # a second before summer time ends
        datetime(2026, 7, 1, 5, 0, tzinfo=UTC),
        datetime(2027, 1, 15, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_no_event_is_later_than_now(now: datetime) -> None:
    times = [
        _time(r) for r in demo_data.generate(seed=3, count=400, now=now) if r["type"] == "event"
    ]
    assert max(times) <= now
    assert min(times) > now - timedelta(days=70)


def test_event_times_carry_the_offset_of_their_country(
    records: list[dict[str, object]],
) -> None:
    winter = {"GB": timedelta(0), "DE": timedelta(hours=1), "FR": timedelta(hours=1)}
    for record in records:
        if record["type"] != "event":
            continue
        time = _time(record)
        location = record["location"]
        assert isinstance(location, dict)
        country = location["country"]
        assert time.utcoffset() == demo_data.utc_offset(country, time.astimezone(UTC))
        if country in winter and time < datetime(2026, 3, 29, 1, tzinfo=UTC):
            assert time.utcoffset() == winter[country]


def test_summer_time_starts_and_ends_on_the_last_sundays_at_one_utc() -> None:
    start = datetime(2026, 3, 29, 1, tzinfo=UTC)
    end = datetime(2026, 10, 25, 1, tzinfo=UTC)
    second = timedelta(seconds=1)
    assert demo_data.utc_offset("GB", start - second) == timedelta(0)
    assert demo_data.utc_offset("GB", start) == timedelta(hours=1)
    assert demo_data.utc_offset("DE", end - second) == timedelta(hours=2)
    assert demo_data.utc_offset("NL", end) == timedelta(hours=1)


def test_events_of_a_shipment_are_in_time_order(records: list[dict[str, object]]) -> None:
    last: dict[object, datetime] = {}
    for record in records:
        if record["type"] != "event":
            continue
        time = _time(record)
        number = record["tracking_number"]
        assert time > last.get(number, datetime.min.replace(tzinfo=UTC))
        last[number] = time


def test_the_current_statuses_cover_every_kind_of_journey(
    records: list[dict[str, object]],
) -> None:
    statuses = Counter(_current_status(records).values())
    for status in (
        "pending",
        "info_received",
        "in_transit",
        "out_for_delivery",
        "failed_attempt",
        "exception",
        "returned_to_sender",
        "delivered",
    ):
        assert statuses[status] > 0, status
    assert statuses["delivered"] > 500


def test_histories_include_failed_attempts_exceptions_and_deliveries_weeks_ago(
    records: list[dict[str, object]],
) -> None:
    events = [r for r in records if r["type"] == "event"]
    reasons = Counter(r.get("reason") for r in events)
    assert reasons["recipient_absent"] > 0
    assert reasons["customs"] > 0
    assert reasons["damaged"] > 0
    assert reasons["address_problem"] > 0
    delivered = [_time(r) for r in events if r["status"] == "delivered"]
    assert min(delivered) < NOW - timedelta(weeks=4)
    assert all("proof" in r for r in events if r["status"] == "delivered")


def test_places_are_real_cities_in_the_four_countries(records: list[dict[str, object]]) -> None:
    known = {
        (code, city.name, city.region)
        for code, country in demo_data.COUNTRIES.items()
        for city in country.cities
    }
    for record in records:
        place = record["destination"] if record["type"] == "shipment" else record["location"]
        assert isinstance(place, dict)
        assert (place["country"], place["city"], place["region"]) in known
    assert set(demo_data.COUNTRIES) == {"GB", "DE", "FR", "NL"}


def test_contacts_are_at_example_domains_and_reserved_phone_ranges(
    records: list[dict[str, object]],
) -> None:
    for record in records:
        if record["type"] != "shipment":
            continue
        recipient = record["recipient"]
        assert isinstance(recipient, dict)
        if "email" in recipient:
            assert recipient["email"].rsplit("@", 1)[1] in demo_data._EMAIL_DOMAINS
        if "phone" in recipient:
            assert recipient["phone"].startswith(("+44 7700 900", "+33 1 99 00 "))


def test_promised_dates_follow_the_label_date(records: list[dict[str, object]]) -> None:
    first_event: dict[object, datetime] = {}
    for record in records:
        if record["type"] == "event":
            first_event.setdefault(record["tracking_number"], _time(record))
    for record in records:
        if record["type"] == "shipment" and record["tracking_number"] in first_event:
            promised = datetime.fromisoformat(str(record["promised_date"])).date()
            label = first_event[record["tracking_number"]].date()
            assert timedelta(days=1) <= promised - label <= timedelta(days=5)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next(demo_data.generate(seed=1, count=1, now=datetime(2026, 1, 1)))


def test_records_can_be_written_as_json_lines(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "demo.jsonl"
    written = demo_data.write_jsonl(path, demo_data.generate(seed=1, count=20, now=NOW))
    lines = path.read_bytes().splitlines()
    assert len(lines) == written > 20
    assert all(ADAPTER.validate_json(line) for line in lines)
