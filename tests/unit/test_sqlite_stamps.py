"""The shortcuts that turn timestamps into SQLite's stored text give exactly the text
SQLAlchemy's own DateTime processing stores, whatever the moment's UTC offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from parcelvault.adapters.db import store
from parcelvault.domain.shipments import ScanEvent
from parcelvault.domain.statuses import Status
from parcelvault.services import ingest

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=OFFSETS
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sqlalchemy_text(moment: datetime) -> str:
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
    text = sqlite.DATETIME().bind_processor(sqlite.dialect())(naive_utc)
    assert isinstance(text, str)
    return text


@given(MOMENTS)
def test_sqlite_datetime_stores_the_text_sqlalchemy_stores(moment: datetime) -> None:
    assert store.sqlite_datetime(moment) == _sqlalchemy_text(moment)


WIDE_MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
)


@given(WIDE_MOMENTS)
def test_a_flattened_event_carries_its_moment_as_microseconds_text_and_offset(
    moment: datetime,
) -> None:
    event = ScanEvent("e-1", moment, Status.IN_TRANSIT)
    flat = ingest.flat_event(1, "AB12CD34EF", event, None, text_stamps=True)
    at_us, stored_at, offset_min = flat[3], flat[4], flat[5]
    assert at_us == (moment - _EPOCH) // timedelta(microseconds=1)
    offset = moment.utcoffset()
    assert offset is not None
    assert offset_min == offset // timedelta(minutes=1)
    if flat[14]:  # refused (before 2000): kept as the moment itself, never as text
        assert stored_at is moment
    else:
        assert stored_at == store.sqlite_datetime(moment)


def test_an_event_at_the_edge_of_the_calendar_is_refused_without_an_error() -> None:
    edge = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))
    flat = ingest.flat_event(
        1, "AB12CD34EF", ScanEvent("e-1", edge, Status.IN_TRANSIT), None, text_stamps=True
    )
    assert flat[3] == (edge - _EPOCH) // timedelta(microseconds=1)
    assert flat[4] is edge


def test_rows_sharing_one_timestamp_object_each_get_its_text() -> None:
    now = datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)
    later = now + timedelta(seconds=1)
    rows = [("a", now, None), ("b", now, later), ("c", later, now), ("d", None, now)]
    assert store._with_text_stamps(rows, stamps=(1, 2), days=()) == [
        ("a", "2026-11-30 08:00:00.123456", None),
        ("b", "2026-11-30 08:00:00.123456", "2026-11-30 08:00:01.123456"),
        ("c", "2026-11-30 08:00:01.123456", "2026-11-30 08:00:00.123456"),
        ("d", None, "2026-11-30 08:00:00.123456"),
    ]
