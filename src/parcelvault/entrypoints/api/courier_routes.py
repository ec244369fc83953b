"""Courier routes over HTTP: a tenant makes a route and hands its device token to a
courier; the device reads its stops and marks them done with that token alone."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.domain.errors import Unauthenticated
from parcelvault.entrypoints.api.problems import problem
from parcelvault.entrypoints.api.routes import PRIVATE, PROBLEMS, Caller, json_response, vault_of
from parcelvault.entrypoints.api.views_json import nest
from parcelvault.services import couriers
from parcelvault.services.tracking import TrackingView

courier_router = APIRouter(prefix="/api/v1")


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset")
    return value


class RouteIn(BaseModel):
    """Times and stops are checked together by the service, so that one 422 lists
    every problem of the route (a missing offset, a past date, unknown numbers...)."""

    model_config = ConfigDict(extra="forbid")
    route_date: date = Field(alias="date", description="the day of the route, YYYY-MM-DD")
    starts_at: Annotated[datetime, BeforeValidator(_text_only)] = Field(
        description="ISO 8601 with a UTC offset; the token works from then until the end "
        "of `date` in that offset"
    )
    stops: list[str] = Field(
        description="tracking numbers in delivery order, each of a shipment you own or carry",
        json_schema_extra={"minItems": 1, "maxItems": couriers.MAX_STOPS},
    )


class RouteCreatedOut(BaseModel):
    route_id: str
    token: str = Field(description="the device token; shown once, only its SHA-256 is kept")
    ends_at: str = Field(description="when the token stops working (end of the route's day)")
    stops: int


class CourierAddressOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str | None
    region: str | None
    city: str | None
    postcode: str | None = None
    street: list[str] | None = None
    notes: str | None = Field(default=None, description="delivery notes")


class CourierRecipientOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, description='initials only ("J. D.")')


class CourierShipmentOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_number: str
    display_number: str
    status: str
    status_label: str
    promised_date: str | None
    service: str | None
    destination: CourierAddressOut
    recipient: CourierRecipientOut


class CourierStopOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int = Field(description="1-based place in the route")
    status: couriers.StopStatus = Field(
        description="upcoming (the route has not started), active, completed, or closed "
        "(the parcel reached a final status some other way)"
    )
    shipment: CourierShipmentOut | None = Field(
        default=None, description="active stops only, at the courier tier of the policy"
    )


class CourierRouteOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route_id: str
    date: str
    starts_at: str
    ends_at: str
    stops: list[CourierStopOut]


class StopCompletedOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int
    status: couriers.StopStatus
    completed_at: str


DEVICE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: PROBLEMS[code] for code in (401, 404, 409)
}


def device_unauthenticated() -> Response:
    """The one answer to every token that does not open a route, whatever the reason."""
    return problem(
        401,
        "unauthenticated",
        "Unauthenticated",
        "Send `Authorization: Bearer <device token>`; a token works until the end of its "
        "route's day unless it is revoked.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _device_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def courier_shipment(view: TrackingView) -> dict[str, Any]:
    """The courier's form of a view `disclose` has already filtered for the tier."""
    personal = nest(view.personal)
    place = view.destination
    return {
        "tracking_number": view.tracking_number,
        "display_number": view.display_number,
        "status": view.status.value,
        "status_label": view.status_label,
        "promised_date": view.promised_date.isoformat() if view.promised_date else None,
        "service": view.service,
        "destination": {
            "country": place.country,
            "region": place.region,
            "city": place.city,
            **personal.get("destination", {}),
        },
        "recipient": personal.get("recipient", {}),
    }


def route_json(route: couriers.CourierRoute) -> dict[str, Any]:
    stops: list[dict[str, Any]] = []
    for stop in route.stops:
        body: dict[str, Any] = {"position": stop.position, "status": stop.status.value}
        if stop.view is not None:
            body["shipment"] = courier_shipment(stop.view)
        stops.append(body)
    return {
        "route_id": route.route_id,
        "date": route.route_date.isoformat(),
        "starts_at": route.starts_at.isoformat(),
        "ends_at": route.ends_at.isoformat(),
        "stops": stops,
    }


@courier_router.post(
    "/routes",
    status_code=201,
    response_model=RouteCreatedOut,
    responses=PROBLEMS,
    summary="Make a courier route for one day and get its device token",
)
async def create_route(request: Request, caller: Caller, body: RouteIn) -> Response:
    caller.require("events:write")
    created = await run_in_threadpool(
        couriers.create_route,
        vault=vault_of(request),
        principal=caller,
        route_date=body.route_date,
        starts_at=body.starts_at,
        stops=body.stops,
    )
    return json_response(
        {
            "route_id": created.route_id,
            "token": created.token,
            "ends_at": created.ends_at.isoformat(),
            "stops": created.stops,
        },
        201,
        PRIVATE,
    )


@courier_router.delete(
    "/routes/{route_id}",
    status_code=204,
    responses=PROBLEMS,
    summary="Revoke a route's device token at once",
)
async def revoke_route(request: Request, caller: Caller, route_id: str) -> Response:
    caller.require("events:write")
    await run_in_threadpool(
        couriers.revoke_route, vault=vault_of(request), principal=caller, route_id=route_id
    )
    return Response(status_code=204, headers=PRIVATE)


@courier_router.get(
    "/courier/stops",
    response_model=CourierRouteOut,
    responses=DEVICE_PROBLEMS,
    summary="The stops of the device token's route, addresses of active stops only",
)
async def courier_stops(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    try:
        route = await run_in_threadpool(
            couriers.stops_for_device, vault=vault_of(request), token=_device_token(authorization)
        )
    except Unauthenticated:
        return device_unauthenticated()
    return json_response(route_json(route), headers=PRIVATE)


@courier_router.post(
    "/courier/stops/{tracking_number}/complete",
    response_model=StopCompletedOut,
    responses=DEVICE_PROBLEMS,
    summary="Mark a stop of the device token's route done",
)
async def complete_stop(
    request: Request,
    tracking_number: str,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    try:
        done = await run_in_threadpool(
            couriers.complete_stop,
            vault=vault_of(request),
            token=_device_token(authorization),
            raw_number=tracking_number,
        )
    except Unauthenticated:
        return device_unauthenticated()
    return json_response(
        {
            "position": done.position,
            "status": couriers.StopStatus.COMPLETED.value,
            "completed_at": done.completed_at.isoformat(),
        },
        headers=PRIVATE,
    )
