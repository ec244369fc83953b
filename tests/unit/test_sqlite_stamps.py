"""The shortcuts that turn timestamps into SQLite's stored text give exactly the text
SQLAlchemy's own DateTime processing stores, whatever the moment's UTC offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from parcelvault.adapters.db import store

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


@given(MOMENTS)
def test_the_text_of_a_moment_in_microseconds_is_the_text_of_the_moment(
    moment: datetime,
) -> None:
    at_us = (moment - _EPOCH) // timedelta(microseconds=1)
    assert store.sqlite_datetime_of_us(at_us) == store.sqlite_datetime(moment)


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
