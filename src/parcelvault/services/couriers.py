"""Courier routes: one day's stops for one device, and what the courier sees of them.

A route is made by a tenant that owns or carries every shipment on it. Its device
token (256 random bits, shown once; only its SHA-256 is stored) opens the route until
the end of the route's day in the UTC offset `starts_at` was given in, unless the
tenant revokes it first. A stop is *active* while the route has started and not
ended, the courier has not completed it and the parcel has not reached a final
status. Only an active stop shows its shipment, at the courier tier of the policy
(street, postcode and delivery notes; the name as initials), and every such read is
an access record whose actor is the route.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum

from sqlalchemy import Connection

from parcelvault.adapters.db import store
from parcelvault.adapters.db.store import AnyRow
from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from parcelvault.domain.statuses import FINAL_STATUSES, Status
from parcelvault.privacy.access import Viewer
from parcelvault.services import ingest
from parcelvault.services.tenants import Principal
from parcelvault.services.tracking import TrackingView, build_view
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

MAX_STOPS = 200
DEVICE_PREFIX = "pvd_"
_TOKEN_MAX = 100


class StopStatus(StrEnum):
    UPCOMING = "upcoming"
    """The route has not started yet."""
    ACTIVE = "active"
    COMPLETED = "completed"
    CLOSED = "closed"
    """The parcel reached a final status (delivered, returned, expired) some other way."""


@dataclass(frozen=True)
class NewRoute:
    route_id: str
    token: str
    starts_at: datetime
    ends_at: datetime
    stops: int


@dataclass(frozen=True)
class CourierStop:
    position: int
    status: StopStatus
    view: TrackingView | None


@dataclass(frozen=True)
class CourierRoute:
    route_id: str
    route_date: date
    starts_at: datetime
    ends_at: datetime
    stops: tuple[CourierStop, ...]


@dataclass(frozen=True)
class CompletedStop:
    position: int
    completed_at: datetime


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def route_problems(
    *, route_date: date, starts_at: datetime, stop_count: int, now: datetime
) -> list[FieldProblem]:
    """What is wrong with a route's day and start, and its number of stops."""
    problems: list[FieldProblem] = []
    zone: tzinfo = UTC
    if starts_at.tzinfo is None or starts_at.utcoffset() is None:
        problems.append(
            FieldProblem(("starts_at",), "needs a UTC offset, e.g. 2026-05-01T08:00:00+01:00")
        )
    else:
        zone = starts_at.tzinfo
        if starts_at.date() != route_date:
            problems.append(
                FieldProblem(("starts_at",), "must fall on the route's date, in its own offset")
            )
    if route_date < now.astimezone(zone).date():
        problems.append(FieldProblem(("date",), "is in the past"))
    if stop_count == 0:
        problems.append(FieldProblem(("stops",), "needs at least one stop"))
    elif stop_count > MAX_STOPS:
        problems.append(
            FieldProblem(("stops",), f"has {stop_count} stops; a route takes at most {MAX_STOPS}")
        )
    return problems


def end_of_day(route_date: date, zone: tzinfo) -> datetime:
    return datetime.combine(route_date + timedelta(days=1), time(0), tzinfo=zone)


def create_route(
    *,
    vault: Vault,
    principal: Principal,
    route_date: date,
    starts_at: datetime,
    stops: Sequence[str],
) -> NewRoute:
    """Check every stop and the times, then store the route, all or nothing. Every
    problem is reported at once; numbers the tenant neither owns nor carries get the
    same message as numbers that do not exist."""
    now = vault.clock()
    problems = route_problems(
        route_date=route_date, starts_at=starts_at, stop_count=len(stops), now=now
    )
    numbers: dict[int, str] = {}
    first_seen: set[str] = set()
    for index, raw in enumerate(stops):
        number = tracking_numbers.for_lookup(raw)
        if number is None:
            problems.append(FieldProblem(("stops", index), "is not a tracking number"))
        elif number in first_seen:
            problems.append(FieldProblem(("stops", index), "appears twice in this route"))
        else:
            first_seen.add(number)
            numbers[index] = number
    with read_then_write(vault) as connection:
        found, shared = ingest.handled_by_number(
            connection, principal.tenant_id, list(numbers.values())
        )
        for index, number in numbers.items():
            shipment = found.get(number)
            if shipment is None:
                message = ingest.SHARED_NUMBER if number in shared else ingest.NOT_HANDLED
                problems.append(FieldProblem(("stops", index), message))
            elif Status(shipment.status) in FINAL_STATUSES:
                message = "has reached a final status (delivered, returned or expired)"
                problems.append(FieldProblem(("stops", index), message))
        if problems:
            raise InvalidInput(sorted(problems, key=_problem_order))
        route_id = secrets.token_hex(16)
        token = DEVICE_PREFIX + secrets.token_urlsafe(32)
        ends_at = end_of_day(route_date, starts_at.tzinfo or UTC)
        store.insert_route(
            connection,
            {
                "id": route_id,
                "tenant_id": principal.tenant_id,
                "route_date": route_date,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "token_hash": hash_token(token),
                "created_at": now,
                "revoked_at": None,
            },
            [
                {
                    "route_id": route_id,
                    "shipment_id": found[number].id,
                    "position": position,
                    "completed_at": None,
                }
                for position, number in enumerate(numbers.values(), start=1)
            ],
        )
    return NewRoute(route_id, token, starts_at, ends_at, len(numbers))


def _problem_order(problem: FieldProblem) -> tuple[int, int]:
    head = ("date", "starts_at", "stops").index(str(problem.loc[0]))
    return head, int(problem.loc[1]) if len(problem.loc) > 1 else -1


def revoke_route(*, vault: Vault, principal: Principal, route_id: str) -> None:
    """End a route's token at once. Only the tenant that made the route may; for
    anyone else the route does not exist. Revoking twice is not an error."""
    with read_then_write(vault) as connection:
        route = store.route_of_tenant(connection, principal.tenant_id, route_id)
        if route is None:
            raise NotFound()
        store.revoke_route(connection, route_id, vault.clock())


def _open_route(connection: Connection, token: str, now: datetime) -> AnyRow:
    """The route a device token opens. Unknown, altered, revoked and expired tokens
    are refused alike."""
    if not token.startswith(DEVICE_PREFIX) or len(token) > _TOKEN_MAX:
        raise Unauthenticated("unknown device token")
    route = store.route_by_token_hash(connection, hash_token(token))
    if route is None or route.revoked_at is not None or now >= route.ends_at:
        raise Unauthenticated("unknown device token")
    return route


def _status_of(stop: AnyRow, started: bool) -> StopStatus:
    if stop.completed_at is not None:
        return StopStatus.COMPLETED
    if Status(stop.status) in FINAL_STATUSES:
        return StopStatus.CLOSED
    return StopStatus.ACTIVE if started else StopStatus.UPCOMING


def stops_for_device(*, vault: Vault, token: str) -> CourierRoute:
    """The route's stops in order; active ones with the courier view of their
    shipment, whose access records are written in the same transaction. The
    transaction holds the write turn from its first read, so no erasure or scan falls
    between a stop's view and its record."""
    now = vault.clock()
    with read_then_write(vault) as connection:
        route = _open_route(connection, token, now)
        started = now >= route.starts_at
        viewer = Viewer(tier="courier", actor_kind="route", actor_id=route.id)
        stops = []
        for stop in store.stops_of_route(connection, route.id):
            status = _status_of(stop, started)
            view = (
                build_view(connection, vault=vault, shipment=stop, viewer=viewer)
                if status is StopStatus.ACTIVE
                else None
            )
            stops.append(CourierStop(stop.position, status, view))
    return CourierRoute(route.id, route.route_date, route.starts_at, route.ends_at, tuple(stops))


def complete_stop(*, vault: Vault, token: str, raw_number: str) -> CompletedStop:
    """Mark a stop of the token's route done; its address leaves the courier's view at
    once. Completing a completed stop again changes nothing."""
    now = vault.clock()
    with read_then_write(vault) as connection:
        route = _open_route(connection, token, now)
        number = tracking_numbers.for_lookup(raw_number)
        stop = next(
            (s for s in store.stops_of_route(connection, route.id) if s.tracking_number == number),
            None,
        )
        if stop is None:
            raise NotFound()
        if stop.completed_at is not None:
            return CompletedStop(stop.position, stop.completed_at)
        if now < route.starts_at:
            raise Conflict("the route has not started yet")
        store.complete_stop(connection, route.id, stop.id, now)
    return CompletedStop(stop.position, now)
