from __future__ import annotations

import hashlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.adapters.wire import BatchEventIn, EventIn, ShipmentIn
from parcelvault.domain.errors import FieldProblem, InvalidInput, NotFound, Unauthenticated
from parcelvault.domain.shipments import ScanEvent
from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.public_cache import VersionedCache, matches
from parcelvault.entrypoints.api.views_json import view_to_json
from parcelvault.services import ingest, operations, tracking
from parcelvault.services.tenants import Principal, authenticate
from parcelvault.services.vault import Vault

router = APIRouter(prefix="/api/v1")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ProblemOut, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}


def vault_of(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("missing bearer token")
    # One indexed read, run on the event loop as the public lookups' is: through the
    # thread pool it queued behind the tenant reads waiting there for the write turn.
    return authenticate(vault=vault_of(request), key=key.strip())


Caller = Annotated[Principal, Depends(principal)]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


PRIVATE = {"Cache-Control": "private, no-store", "Vary": "Cookie, Authorization"}


# The public lookup is the hottest path; it is declared first so routing finds it first.
TRACK_PARAMETERS = [
    {
        "name": "tenant",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 64},
        "description": "the tenant's name, for a carrier number that several tenants use",
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "an ETag of an earlier public response: 304 if unchanged",
    },
]


@router.get(
    "/track/{tracking_number}",
    response_model=schemas.TrackingOut,
    responses={**PROBLEMS, 304: {"description": "not modified (If-None-Match)"}},
    summary="Track a parcel: the public view, or the recipient view after verification",
    openapi_extra={"parameters": TRACK_PARAMETERS},
)
async def get_tracking(request: Request, tracking_number: str) -> Response:
    """The hot path: one indexed query, then cached bytes for the public tier. Query and
    header parameters are read from the request directly (declared for the OpenAPI
    document above) to keep per-request work small."""
    vault = vault_of(request)
    tenant = request.query_params.get("tenant")
    if tenant is not None and len(tenant) > 64:
        raise NotFound()
    resolved = tracking.resolve(
        vault=vault, raw_number=tracking_number, cookies=request.cookies, tenant=tenant
    )
    if resolved.viewer.tier != "public":
        view = tracking.view_of(vault=vault, resolved=resolved)
        return json_response(view_to_json(view), headers=PRIVATE)
    cache = public_cache(request)
    cached = cache.get("json", resolved.shipment_id, resolved.version)
    if cached is None:
        body = orjson.dumps(view_to_json(tracking.view_of(vault=vault, resolved=resolved)))
        cached = (body, etag_of(body))
        cache.put("json", resolved.shipment_id, resolved.version, cached)
    return public_response(*cached, request.headers.get("if-none-match"))


@router.post(
    "/shipments",
    status_code=201,
    response_model=schemas.TrackingOut,
    responses=PROBLEMS,
    summary="Create a shipment",
)
async def create_shipment(request: Request, caller: Caller, body: ShipmentIn) -> Response:
    caller.require("shipments:write")
    vault = vault_of(request)
    view = await run_in_threadpool(
        operations.create_shipment,
        vault=vault,
        principal=caller,
        shipment=body.to_domain(),
        carrier=body.carrier,
    )
    location = f"/api/v1/shipments/{view.tracking_number}"
    return json_response(view_to_json(view), 201, {**PRIVATE, "Location": location})


@router.get(
    "/shipments/{tracking_number}",
    response_model=schemas.TrackingOut,
    responses=PROBLEMS,
    summary="A shipment you own (merchant tier) or carry (carrier tier), as the policy shows it",
)
async def get_shipment(request: Request, caller: Caller, tracking_number: str) -> Response:
    caller.require("shipments:read")
    # Read and assembled on the event loop like a recipient's lookup; the access
    # record is committed by the process's access writer, awaited without blocking.
    view = await tracking.disclosed_view_async(
        vault=vault_of(request), pick=tracking.handled_by(caller.tenant_id, tracking_number)
    )
    return json_response(view_to_json(view), headers=PRIVATE)


@router.post(
    "/shipments/{tracking_number}/events",
    response_model=schemas.IngestOut,
    responses={**PROBLEMS, 200: {"description": "a replay of an event already stored"}},
    status_code=201,
    summary="Add one scan event",
)
async def post_event(
    request: Request, caller: Caller, tracking_number: str, body: EventIn
) -> Response:
    caller.require("events:write")
    result = await run_in_threadpool(
        operations.ingest_events,
        vault=vault_of(request),
        principal=caller,
        items=[(tracking_number, body.to_domain())],
        single=True,
    )
    return json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates},
        201 if result.accepted else 200,
        PRIVATE,
    )


class EventBatch(BaseModel):
    """The batch envelope. Its items are validated one by one in the handler, so that a
    422 lists the wire problems and the rule problems of every bad item together."""

    model_config = ConfigDict(extra="forbid")
    events: Annotated[
        list[SkipValidation[BatchEventIn]],
        Field(min_length=1, max_length=1000, description="1 to 1,000 events, all or nothing"),
    ]


BATCH_ITEM: TypeAdapter[BatchEventIn] = TypeAdapter(BatchEventIn)
Numbered = tuple[int, str, ScanEvent]


def parse_batch(raw_items: list[Any]) -> tuple[list[Numbered], list[FieldProblem]]:
    """(index, tracking number, event) of each well-formed item, and the problems of
    the others, located as ("events", index, field...)."""
    items: list[Numbered] = []
    problems: list[FieldProblem] = []
    for index, raw in enumerate(raw_items):
        try:
            item = BATCH_ITEM.validate_python(raw)
        except ValidationError as exc:
            problems.extend(
                FieldProblem(("events", index, *error["loc"]), error["msg"])
                for error in exc.errors(include_url=False, include_input=False)
            )
            continue
        items.append((index, item.tracking_number, item.to_domain()))
    return items, problems


def rule_problems(vault: Vault, caller: Principal, items: list[Numbered]) -> list[FieldProblem]:
    """The rule problems of well-formed items (time, reason, unknown numbers), found
    without writing anything."""
    with vault.engine.connect() as connection:
        prepared = ingest.prepare_events(
            connection,
            keystore=vault.keystore,
            keyring=vault.keyring,
            policy=vault.policy,
            tenant_id=caller.tenant_id,
            items=items,
            now=vault.clock(),
        )
    return [
        FieldProblem(("events", p.index, *p.problem.loc), p.problem.message)
        for p in prepared.problems
    ]


@router.post(
    "/events/batch",
    response_model=schemas.IngestOut,
    responses=PROBLEMS,
    summary="Add up to 1,000 scan events, all or nothing",
)
async def post_batch(request: Request, caller: Caller, body: EventBatch) -> Response:
    caller.require("events:write")
    vault = vault_of(request)
    items, problems = parse_batch(list(body.events))
    if problems:
        problems += await run_in_threadpool(rule_problems, vault, caller, items)
        problems.sort(key=lambda p: int(p.loc[1]))
        raise InvalidInput(problems)
    result = await run_in_threadpool(
        operations.ingest_events,
        vault=vault,
        principal=caller,
        items=[(number, event) for _, number, event in items],
    )
    return json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates}, headers=PRIVATE
    )


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def public_response(body: bytes, etag: str, if_none_match: str | None) -> Response:
    headers = {"ETag": etag, "Cache-Control": "public, max-age=30", "Vary": "Cookie"}
    if if_none_match and matches(etag, if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def public_cache(request: Request) -> VersionedCache[tuple[bytes, str]]:
    cache: VersionedCache[tuple[bytes, str]] = request.app.state.public_cache
    return cache


class PostcodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    postcode: Annotated[str, Field(min_length=1, max_length=16)]


def set_recipient_cookie(
    response: Response, request: Request, grant: tracking.RecipientPass, max_age: int
) -> None:
    response.set_cookie(
        tracking.cookie_name(grant.shipment_id),
        grant.token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.post(
    "/track/{tracking_number}/verify",
    response_model=schemas.VerifiedOut,
    responses=PROBLEMS,
    summary="Prove you are the recipient with the destination postcode",
)
async def verify(
    request: Request,
    tracking_number: str,
    body: Annotated[PostcodeIn, Body()],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    vault = vault_of(request)
    grant = await run_in_threadpool(
        tracking.verify_postcode,
        vault=vault,
        raw_number=tracking_number,
        postcode=body.postcode,
        tenant=tenant,
    )
    response = json_response(
        {"tier": "recipient", "expires_at": grant.expires_at.isoformat()}, headers=PRIVATE
    )
    set_recipient_cookie(response, request, grant, vault.settings.recipient_session_seconds)
    return response
