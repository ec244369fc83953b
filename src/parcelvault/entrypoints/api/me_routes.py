"""The privacy centre as JSON, for a person signed in with a one-time code.

Authenticated by the `pv_subject` session cookie that `/privacy/centre/sign-in` sets
(HttpOnly, SameSite=Strict). The one state-changing call, erasure, takes a JSON body,
which no cross-site form can send.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.domain.errors import Conflict, NotFound
from parcelvault.entrypoints.api.ledger_routes import access_log_json
from parcelvault.entrypoints.api.problems import problem
from parcelvault.entrypoints.api.routes import PRIVATE, PROBLEMS, json_response, vault_of
from parcelvault.services import erasure, export, subject_access
from parcelvault.services.subject_access import Scope
from parcelvault.services.vault import Vault

SESSION_COOKIE = "pv_subject"
me_router = APIRouter(prefix="/api/v1/me", tags=["privacy centre"], responses=PROBLEMS)


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: bool


def _signed_out() -> Response:
    return problem(
        401,
        "unauthenticated",
        "Unauthenticated",
        "Sign in with a one-time code at /privacy/centre/sign-in; this API reads the "
        "session cookie it sets.",
    )


async def _scope(request: Request) -> Scope | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    subject_id = await run_in_threadpool(
        subject_access.subject_of, vault=vault_of(request), token=token
    )
    return subject_access.code_scope(subject_id) if subject_id else None


def _shipments(vault: Vault, scope: Scope) -> list[dict[str, Any]]:
    return [
        {
            "tracking_number": line.tracking_number,
            "status": line.status.value,
            "status_label": line.status_label,
            "status_at": line.status_at.isoformat() if line.status_at else None,
            "destination": {"city": line.dest_city, "country": line.dest_country},
            "address_correctable": line.correctable,
            "address_corrections": [
                {
                    "fields": list(c.fields),
                    "at": c.at.isoformat(),
                    "ledger_index": c.ledger_index,
                }
                for c in line.corrections
            ],
        }
        for line in subject_access.shipments_in(vault=vault, scope=scope)
    ]


@me_router.get("", summary="Your parcels")
async def me(request: Request) -> Response:
    scope = await _scope(request)
    if scope is None:
        return _signed_out()
    found = await run_in_threadpool(_shipments, vault_of(request), scope)
    return json_response({"shipments": found}, headers=PRIVATE)


def _access_logs(vault: Vault, scope: Scope) -> list[dict[str, Any]]:
    return [
        {
            "tracking_number": line.tracking_number,
            **access_log_json(subject_access.access_log(vault=vault, line=line)),
        }
        for line in subject_access.shipments_in(vault=vault, scope=scope)
    ]


@me_router.get("/access-log", summary="Who was shown your details, per parcel")
async def access_logs(request: Request) -> Response:
    scope = await _scope(request)
    if scope is None:
        return _signed_out()
    found = await run_in_threadpool(_access_logs, vault_of(request), scope)
    return json_response({"shipments": found}, headers=PRIVATE)


@me_router.get("/export", summary="Everything held about you (parcelvault-export/1)")
async def my_export(request: Request) -> Response:
    scope = await _scope(request)
    if scope is None:
        return _signed_out()
    data = await run_in_threadpool(
        export.export_subject,
        vault=vault_of(request),
        subject_id=scope.subject_id,
        requested_by="subject",
    )
    return json_response(data, headers=PRIVATE)


@me_router.post("/erasure", status_code=201, summary="Erase your data")
async def erase(request: Request, body: ErasureIn) -> Response:
    scope = await _scope(request)
    if scope is None:
        return _signed_out()
    if not body.confirm:
        return problem(422, "not-confirmed", "Not confirmed", 'Send {"confirm": true}.')
    vault = vault_of(request)
    try:
        receipt = await run_in_threadpool(
            erasure.erase_subject, vault=vault, subject_id=scope.subject_id, requested_by="subject"
        )
    except NotFound:
        return _signed_out()
    except Conflict as exc:
        return problem(409, "legal-hold", "Under legal hold", exc.detail)
    details = await run_in_threadpool(erasure.receipt_details, vault=vault, receipt_id=receipt.id)
    response = json_response(details, status=201, headers=PRIVATE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@me_router.get("/erasures/{receipt_id}", summary="An erasure receipt")
async def receipt(request: Request, receipt_id: str) -> Response:
    details = await run_in_threadpool(
        erasure.receipt_details, vault=vault_of(request), receipt_id=receipt_id[:64]
    )
    return json_response(details, headers=PRIVATE)


@me_router.post("/sign-out", status_code=204, summary="End the session")
async def sign_out(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        await run_in_threadpool(subject_access.end_session, vault=vault_of(request), token=token)
    response = Response(status_code=204, headers=PRIVATE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
