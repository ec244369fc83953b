from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from parcelvault.domain.shipments import Position, ScanEvent, event_problems, supersedes
from parcelvault.domain.statuses import STAGES, Reason, Status, stage_of

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def event(**overrides: object) -> ScanEvent:
    fields: dict[str, object] = {"event_id": "e1", "time": NOW, "status": Status.IN_TRANSIT}
    fields.update(overrides)
    return ScanEvent(**fields)  # type: ignore[arg-type]


def test_an_event_up_to_ten_minutes_ahead_is_accepted() -> None:
    assert event_problems(event(time=NOW + timedelta(minutes=10)), now=NOW) == []


def test_an_event_more_than_ten_minutes_ahead_is_rejected() -> None:
    problems = event_problems(event(time=NOW + timedelta(minutes=10, seconds=1)), now=NOW)
    assert [p.loc for p in problems] == [("time",)]


def test_a_future_check_compares_instants_not_wall_clocks() -> None:
    plus_two = timezone(timedelta(hours=2))
    local = (NOW + timedelta(minutes=5)).astimezone(plus_two)
    assert event_problems(event(time=local), now=NOW) == []


def test_a_naive_time_is_rejected() -> None:
    problems = event_problems(event(time=NOW.replace(tzinfo=None)), now=NOW)
    assert [p.loc for p in problems] == [("time",)]


def test_only_problem_statuses_take_a_reason() -> None:
    assert event_problems(event(status=Status.FAILED_ATTEMPT, reason=Reason.REFUSED), now=NOW) == []
    problems = event_problems(event(status=Status.DELIVERED, reason=Reason.REFUSED), now=NOW)
    assert [p.loc for p in problems] == [("reason",)]


def test_a_later_event_becomes_current_and_an_earlier_one_does_not() -> None:
    current = Position(NOW, arrival=1)
    assert supersedes(Position(NOW + timedelta(seconds=1), arrival=0), current)
    assert not supersedes(Position(NOW - timedelta(seconds=1), arrival=9), current)


def test_equal_times_are_settled_by_arrival_order() -> None:
    current = Position(NOW, arrival=5)
    assert supersedes(Position(NOW, arrival=6), current)
    assert not supersedes(Position(NOW, arrival=4), current)


def test_the_first_event_always_becomes_current() -> None:
    assert supersedes(Position(NOW, arrival=0), None)


def test_every_status_has_a_stage_on_the_progress_bar() -> None:
    for status in Status:
        assert 0 <= stage_of(status) < len(STAGES)
    assert stage_of(Status.DELIVERED) == len(STAGES) - 1
