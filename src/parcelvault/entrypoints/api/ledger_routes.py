"""The transparency ledger over HTTP: the latest signed checkpoint, entries, inclusion and
consistency proofs, and a verified recipient's access log. Who may read what is decided
in `services.ledger_views`; this module only shapes the answers."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.routes import PRIVATE, PROBLEMS, json_response, vault_of
from parcelvault.services import ledger_views
from parcelvault.services.ledger_views import MAX_INDEX

ledger_router = APIRouter()

IMMUTABLE = {"Cache-Control": "public, max-age=86400"}
"""Proofs for given sizes never change: stored tree nodes are written once."""
SHORT = {"Cache-Control": "public, max-age=5"}
ENTRY_PUBLIC = {"Cache-Control": "public, max-age=60", "Vary": "Cookie"}

Index = Annotated[int, Query(ge=0, le=MAX_INDEX)]


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@ledger_router.get(
    "/ledger/checkpoint",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {}},
            "description": "the latest checkpoint: a C2SP signed note (tlog-checkpoint)",
        },
        404: PROBLEMS[404],
    },
    summary="The latest signed checkpoint of the transparency ledger",
    tags=["ledger"],
)
async def get_checkpoint(request: Request) -> Response:
    latest = await run_in_threadpool(ledger_views.latest_checkpoint, vault=vault_of(request))
    return Response(latest.note, media_type="text/plain; charset=utf-8", headers=SHORT)


@ledger_router.get(
    "/api/v1/ledger/entries/{index}",
    response_model=schemas.LedgerEntryOut,
    responses=PROBLEMS,
    summary="One ledger entry; bodies about a shipment only for its verified recipient",
    tags=["ledger"],
)
async def get_entry(request: Request, index: Annotated[int, Path(ge=0, le=MAX_INDEX)]) -> Response:
    view = await run_in_threadpool(
        ledger_views.entry, vault=vault_of(request), index=index, cookies=request.cookies
    )
    body: dict[str, Any] = {
        "index": view.index,
        "kind": view.kind,
        "leaf_hash": b64(view.leaf_hash),
        "created_at": view.created_at.isoformat(),
        "body": view.body,
        "salt": b64(view.salt) if view.salt is not None else None,
        "erased": view.erased,
        "withheld": view.withheld,
    }
    return json_response(body, headers=PRIVATE if view.body is not None else ENTRY_PUBLIC)


@ledger_router.get(
    "/api/v1/ledger/proof/inclusion",
    response_model=schemas.InclusionProofOut,
    responses=PROBLEMS,
    summary="Inclusion proof of entry `index` in the tree of `size` entries (RFC 9162)",
    description="`size` may not exceed the latest signed checkpoint's size, so that every "
    "proof ends at a root the log has signed or can prove consistent with one.",
    tags=["ledger"],
)
async def get_inclusion_proof(request: Request, index: Index, size: Index) -> Response:
    proof = await run_in_threadpool(
        ledger_views.inclusion, vault=vault_of(request), index=index, size=size
    )
    body = {
        "index": proof.index,
        "size": proof.size,
        "leaf_hash": b64(proof.leaf_hash),
        "proof": [b64(item) for item in proof.proof],
        "root": b64(proof.root),
    }
    return json_response(body, headers=IMMUTABLE)


@ledger_router.get(
    "/api/v1/ledger/proof/consistency",
    response_model=schemas.ConsistencyProofOut,
    responses=PROBLEMS,
    summary="Consistency proof from the tree of `from` entries to that of `to` (RFC 9162)",
    description="1 <= from <= to <= the latest signed checkpoint's size.",
    tags=["ledger"],
)
async def get_consistency_proof(
    request: Request,
    old_size: Annotated[int, Query(alias="from", ge=0, le=MAX_INDEX)],
    new_size: Annotated[int, Query(alias="to", ge=0, le=MAX_INDEX)],
) -> Response:
    proof = await run_in_threadpool(
        ledger_views.consistency, vault=vault_of(request), old_size=old_size, new_size=new_size
    )
    body = {
        "from": proof.old_size,
        "to": proof.new_size,
        "proof": [b64(item) for item in proof.proof],
        "root_from": b64(proof.old_root),
        "root_to": b64(proof.new_root),
    }
    return json_response(body, headers=IMMUTABLE)


def access_log_json(found: ledger_views.AccessLog) -> dict[str, Any]:
    return {
        "accesses": [
            {
                "at": line.at.isoformat(),
                "tier": line.tier,
                "actor": line.actor,
                "fields": list(line.fields),
                "field_labels": list(line.field_labels),
                "purpose": line.purpose,
                "reason": line.reason,
                "reason_label": line.reason_label,
                "ledger_index": line.ledger_index,
                "entry_url": line.entry_url,
                "proof_url": line.proof_url,
            }
            for line in found.lines
        ],
        "truncated": found.truncated,
    }


@ledger_router.get(
    "/api/v1/track/{tracking_number}/access-log",
    response_model=schemas.AccessLogOut,
    responses=PROBLEMS,
    summary="Who was shown your personal data (verified recipient only)",
    description="Needs the cookie of `POST /api/v1/track/{tn}/verify`; without it the answer "
    "is the same 404 as for an unknown number.",
    tags=["ledger"],
)
async def get_access_log(
    request: Request,
    tracking_number: str,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    found = await run_in_threadpool(
        ledger_views.recipient_access_log,
        vault=vault_of(request),
        raw_number=tracking_number,
        cookies=request.cookies,
        tenant=tenant,
    )
    return json_response(access_log_json(found), headers=PRIVATE)
