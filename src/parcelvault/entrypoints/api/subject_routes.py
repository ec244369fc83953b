"""The recipient's rights over HTTP: consents and address corrections, for a visitor
holding the cookie of `POST /api/v1/track/{tn}/verify`. The use cases live in
`services.consent` and `services.corrections`; this module only shapes the answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.domain.errors import FieldProblem, InvalidInput
from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.problems import problem
from parcelvault.entrypoints.api.routes import PRIVATE, PROBLEMS, json_response, vault_of
from parcelvault.services import consent, corrections
from parcelvault.services.recipients import (
    RecipientUnverified,
    VerifiedRecipient,
    verified_recipient,
)
from parcelvault.services.vault import Vault

ANSWERS = {**PROBLEMS, 410: {**PROBLEMS[404], "description": "the recipient's data was erased"}}
subject_router = APIRouter(prefix="/api/v1/track/{tracking_number}", tags=["recipient"])

SOURCE = "recipient_api"
NOTICE_URL = "/privacy"
TIER_NOTE = (
    "Needs the cookie of `POST /api/v1/track/{tn}/verify` for this shipment: without it "
    "`401`; an unknown number is `404`."
)
Tenant = Annotated[
    str | None,
    Query(max_length=64, description="the tenant's name, for a number several tenants use"),
]


def install(app: FastAPI) -> None:
    app.include_router(subject_router)

    @app.exception_handler(RecipientUnverified)
    async def _unverified(_: Request, __: RecipientUnverified) -> Response:
        return problem(
            401,
            "recipient-unverified",
            "Recipient verification required",
            "Prove you are the recipient first: POST the destination postcode to "
            "/api/v1/track/{tracking_number}/verify, then send its cookie.",
            headers={"WWW-Authenticate": 'Cookie realm="recipient"'},
        )


async def recipient(
    request: Request, tracking_number: str, tenant: str | None
) -> tuple[Vault, VerifiedRecipient]:
    vault = vault_of(request)
    found = await run_in_threadpool(
        verified_recipient,
        vault=vault,
        raw_number=tracking_number,
        cookies=request.cookies,
        tenant=tenant,
    )
    return vault, found


def consent_json(purpose: str, latest: consent.Consent | None) -> dict[str, Any]:
    return {
        "purpose": purpose,
        "label": consent.PURPOSE_LABELS[purpose],
        "granted": latest.granted if latest is not None else False,
        "notice_version": latest.notice_version if latest is not None else None,
        "source": latest.source if latest is not None else None,
        "at": latest.at.isoformat() if latest is not None else None,
    }


def _current(vault: Vault, subject_id: str) -> dict[str, consent.Consent]:
    with vault.engine.connect() as connection:
        return consent.current(connection, subject_id)


def _history(vault: Vault, subject_id: str) -> list[consent.Consent]:
    with vault.engine.connect() as connection:
        return consent.history(connection, subject_id)


@subject_router.get(
    "/consents",
    response_model=schemas.ConsentsOut,
    responses=ANSWERS,
    summary="Your consents, one per purpose (verified recipient only)",
    description="Nothing is consented to until you opt in. " + TIER_NOTE,
)
async def get_consents(request: Request, tracking_number: str, tenant: Tenant = None) -> Response:
    vault, found = await recipient(request, tracking_number, tenant)
    latest = await run_in_threadpool(_current, vault, found.subject_id)
    body = {
        "notice_version": consent.current_notice_version(vault.policy),
        "notice_url": NOTICE_URL,
        "consents": [consent_json(purpose, row) for purpose, row in consent.states(latest)],
    }
    return json_response(body, headers=PRIVATE)


@subject_router.get(
    "/consents/history",
    response_model=schemas.ConsentHistoryOut,
    responses=ANSWERS,
    summary="Every consent you gave or withdrew, newest first (verified recipient only)",
    description=TIER_NOTE,
)
async def get_consent_history(
    request: Request, tracking_number: str, tenant: Tenant = None
) -> Response:
    vault, found = await recipient(request, tracking_number, tenant)
    rows = await run_in_threadpool(_history, vault, found.subject_id)
    body = {
        "history": [
            {
                "purpose": row.purpose,
                "granted": row.granted,
                "notice_version": row.notice_version,
                "source": row.source,
                "at": row.at.isoformat(),
            }
            for row in rows
        ]
    }
    return json_response(body, headers=PRIVATE)


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granted: StrictBool = Field(description="true to give the consent, false to withdraw it")
    notice_version: str = Field(
        max_length=32,
        description="the `notice_version` of `GET .../consents` that was shown; giving a "
        "consent against a notice no longer in force is `409`",
    )


@subject_router.put(
    "/consents/{purpose}",
    response_model=schemas.ConsentChangeOut,
    responses=ANSWERS,
    summary="Give or withdraw one consent (verified recipient only)",
    description="Idempotent: asking for what is already in force changes nothing "
    "(`changed: false`). Each change is kept in your history and recorded in the "
    "transparency ledger. `410` when your data was erased. " + TIER_NOTE,
)
async def put_consent(
    request: Request,
    tracking_number: str,
    purpose: str,
    body: Annotated[ConsentIn, Body()],
    tenant: Tenant = None,
) -> Response:
    vault, found = await recipient(request, tracking_number, tenant)
    consent.check_purpose(purpose)
    change = await run_in_threadpool(
        consent.set_consent,
        vault=vault,
        subject_id=found.subject_id,
        purpose=purpose,
        granted=body.granted,
        notice_version=body.notice_version,
        source=SOURCE,
        shipment_id=found.shipment_id,
    )
    answer = {**consent_json(purpose, change.consent), "changed": change.changed}
    return json_response(answer, headers=PRIVATE)


class AddressCorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    street: list[str] | None = Field(
        default=None,
        description=f"1 to {corrections.STREET_LINES_MAX} lines of 1 to "
        f"{corrections.STREET_LINE_MAX} characters",
    )
    postcode: str | None = Field(
        default=None,
        description=f"{corrections.POSTCODE_MIN} to {corrections.POSTCODE_MAX} characters",
    )
    notes: str | None = Field(
        default=None,
        description=f"delivery notes for the courier, at most {corrections.NOTES_MAX} "
        'characters; `""` or `null` removes them',
    )

    def changes(self) -> dict[str, str]:
        """Policy field name -> value, for the fields the body names."""
        given = self.model_fields_set
        changes: dict[str, str] = {}
        problems: list[FieldProblem] = []
        if "street" in given:
            if self.street is None:
                problems.append(FieldProblem(("street",), "cannot be removed"))
            else:
                problems += [
                    FieldProblem(("street", number), "one line each, without line breaks")
                    for number, line in enumerate(self.street)
                    if "\n" in line or "\r" in line
                ]
                changes[corrections.STREET] = "\n".join(self.street)
        if "postcode" in given:
            if self.postcode is None:
                problems.append(FieldProblem(("postcode",), "cannot be removed"))
            else:
                changes[corrections.POSTCODE] = self.postcode
        if "notes" in given:
            changes[corrections.NOTES] = self.notes or ""
        if problems:
            raise InvalidInput(problems)
        return changes


@subject_router.post(
    "/address",
    response_model=schemas.AddressCorrectionOut,
    responses=ANSWERS,
    summary="Correct your delivery address before the parcel is out for delivery",
    description="Send only the fields to change. Refused with `409` once the parcel is "
    "out for delivery (or in any status but pending, info_received and in_transit), "
    "unless the latest scan is an exception or a failed attempt for `address_problem`; "
    "`410` when your data was erased. The values are not echoed: read the shipment again to "
    "see them. A corrected postcode replaces the one that verifies you; your current "
    "cookie stays valid. " + TIER_NOTE,
)
async def post_address(
    request: Request,
    tracking_number: str,
    body: Annotated[AddressCorrectionIn, Body()],
    tenant: Tenant = None,
) -> Response:
    vault, found = await recipient(request, tracking_number, tenant)
    changes = body.changes()
    done = await run_in_threadpool(
        corrections.correct_address,
        vault=vault,
        shipment_id=found.shipment_id,
        changes=changes,
        source=SOURCE,
    )
    answer = {
        "corrected": list(done.fields),
        "at": done.at.isoformat() if done.fields else None,
    }
    return json_response(answer, headers=PRIVATE)
