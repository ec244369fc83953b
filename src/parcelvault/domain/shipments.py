"""Shipments and scan events as plain values, and the rules that govern them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from parcelvault.domain.errors import FieldProblem
from parcelvault.domain.statuses import STATUSES_WITH_REASON, Reason, Status

MAX_FUTURE_SKEW = timedelta(minutes=10)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Origin:
    country: str
    city: str
    postcode: str
    region: str | None = None


@dataclass(frozen=True)
class Destination:
    country: str
    city: str
    postcode: str
    street: tuple[str, ...]
    region: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class NewShipment:
    origin: Origin
    destination: Destination
    recipient: Recipient
    tracking_number: str | None = None
    reference: str | None = None
    service: str | None = None
    promised_date: date | None = None

    def personal_values(self) -> dict[str, str]:
        """Personal values keyed by policy field name; absent values are left out."""
        values = {
            "recipient.name": self.recipient.name,
            "recipient.email": self.recipient.email,
            "recipient.phone": self.recipient.phone,
            "destination.street": "\n".join(self.destination.street),
            "destination.postcode": self.destination.postcode,
            "destination.notes": self.destination.notes,
            "origin.postcode": self.origin.postcode,
        }
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class Location:
    country: str | None = None
    region: str | None = None
    city: str | None = None
    facility: str | None = None


@dataclass(frozen=True)
class Proof:
    received_by: str | None = None
    signature: str | None = None
    photo: str | None = None
    geo: tuple[float, float] | None = None

    def personal_values(self) -> dict[str, str]:
        values = {
            "proof.received_by": self.received_by,
            "proof.signature": self.signature,
            "proof.photo": self.photo,
            "proof.geo": f"{self.geo[0]:.6f},{self.geo[1]:.6f}" if self.geo else None,
        }
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class ScanEvent:
    event_id: str
    time: datetime
    status: Status
    reason: Reason | None = None
    description: str | None = None
    location: Location | None = None
    proof: Proof | None = None


class LocationFields(Protocol):
    @property
    def country(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def city(self) -> str | None: ...
    @property
    def facility(self) -> str | None: ...


class EventFields(Protocol):
    """What a scan event says apart from its proof of delivery: a `ScanEvent`, or the
    validated wire model it is made from (the importer flattens events without a proof
    straight from the wire model, without building the domain objects)."""

    @property
    def event_id(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def status(self) -> Status: ...
    @property
    def reason(self) -> Reason | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def location(self) -> LocationFields | None: ...


def event_problems(event: EventFields, *, now: datetime) -> list[FieldProblem]:
    """Rule violations of one event that the wire schema cannot see on its own."""
    problems: list[FieldProblem] = []
    if event.time.tzinfo is None or event.time.utcoffset() is None:
        problems.append(
            FieldProblem(("time",), "needs a UTC offset, e.g. 2026-05-01T09:30:00+02:00")
        )
    elif event.time - now > MAX_FUTURE_SKEW:
        problems.append(FieldProblem(("time",), "is more than 10 minutes in the future"))
    elif event.time < EARLIEST:
        problems.append(FieldProblem(("time",), "is before 2000-01-01"))
    if event.reason is not None and event.status not in STATUSES_WITH_REASON:
        problems.append(
            FieldProblem(("reason",), "only exception and failed_attempt events take a reason")
        )
    return problems


@dataclass(frozen=True)
class Position:
    """Where a shipment's current status came from: the event time, then arrival order."""

    time: datetime
    arrival: int


def supersedes(candidate: Position, current: Position | None) -> bool:
    """Whether an event at `candidate` becomes the current status over `current`.

    The current status is that of the latest event by event time; events that arrive
    late with an earlier time join the timeline without changing it. Equal times are
    settled by arrival order.
    """
    if current is None:
        return True
    return (candidate.time, candidate.arrival) >= (current.time, current.arrival)
