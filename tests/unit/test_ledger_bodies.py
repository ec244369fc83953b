"""The sequencer's shortcuts for scan-event entries give byte for byte what the general
path gives: timestamps as `datetime.isoformat`, bodies as `canonical`."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from parcelvault.adapters.db.store import sqlite_datetime
from parcelvault.adapters.db.tables import UtcDateTime
from parcelvault.ledger import log

MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(MOMENTS)
def test_a_stored_sqlite_timestamp_formats_like_its_datetime(moment: datetime) -> None:
    stored = sqlite_datetime(moment)
    assert log.iso_utc(stored) == moment.isoformat()


@given(MOMENTS)
def test_a_datetime_from_postgresql_formats_like_itself(moment: datetime) -> None:
    assert log.iso_utc(moment) == moment.isoformat()


def test_text_in_another_shape_is_parsed_rather_than_cut() -> None:
    assert log.iso_utc("2026-11-29 12:00:00") == "2026-11-29T12:00:00+00:00"
    assert log.iso_utc("2026-11-29T12:00:00.5+01:00") == "2026-11-29T11:00:00.500000+00:00"


@given(MOMENTS)
def test_a_stamp_is_the_text_sqlalchemy_stores_for_the_column(moment: datetime) -> None:
    stored = UtcDateTime().process_bind_param(moment, sqlite.dialect())
    assert stored is not None
    assert sqlite_datetime(moment) == sqlite.DATETIME().bind_processor(sqlite.dialect())(stored)


@given(
    st.text(max_size=30),
    st.one_of(st.none(), st.sampled_from(["recipient_absent", "weather"])),
    st.booleans(),
    MOMENTS,
)
def test_an_event_body_is_the_canonical_json_of_its_fields(
    description: str, reason: str | None, proof: bool, moment: datetime
) -> None:
    row = (
        7,
        "scan-1",
        3,
        "0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6",
        "PV12-3456",
        sqlite_datetime(moment),
        -300,
        "in_transit",
        reason,
        description,
        "DE",
        None,
        "Berlin",
        "BER1",
        proof,
        1_764_417_600_000_000,
        "subject",
    )
    ((kind, body, _, subject, ref, created),) = log._event_entries([row], sqlite_datetime)
    assert (kind, subject, ref) == ("event", "subject", None)
    assert body == log.canonical(
        {
            "event_id": "scan-1",
            "tenant": 3,
            "shipment": "0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6",
            "tracking_number": "PV12-3456",
            "time": moment.isoformat(),
            "utc_offset_min": -300,
            "status": "in_transit",
            "reason": reason,
            "description": description,
            "location": ["DE", None, "Berlin", "BER1"],
            "proof_of_delivery": proof,
        }
    )
    assert created == sqlite_datetime(datetime(2025, 11, 29, 12, 0, tzinfo=UTC))
