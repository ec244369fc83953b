"""Response models for the OpenAPI document. Responses are serialized by
`views_json`; a test validates real responses against these models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PlaceOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str | None
    region: str | None
    city: str | None
    facility: str | None = Field(default=None, description="depot code; not in the public tier")


class AddressOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str | None
    region: str | None
    city: str | None
    postcode: str | None = Field(default=None, description="recipient tier and above")
    street: list[str] | None = Field(default=None, description="recipient tier and above")
    notes: str | None = Field(
        default=None, description="delivery notes; recipient, carrier, courier"
    )


class RecipientOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, description='public tier: initials only ("J. D.")')
    email: str | None = None
    phone: str | None = None


class ProofOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    received_by: str | None = None
    signature: str | None = None
    photo: str | None = None
    geo: str | None = Field(default=None, description='"lat,lon"')


class EventOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: str = Field(description="ISO 8601 with the UTC offset the scan was made in")
    status: str
    label: str
    reason: str | None
    reason_label: str | None
    description: str | None
    location: PlaceOut
    proof: ProofOut | None = Field(default=None, description="recipient tier and above")


class TrackingOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str = Field(description="public | recipient | merchant | carrier | courier | support ...")
    tracking_number: str
    display_number: str
    status: str
    status_label: str
    status_at: str | None
    stage: int = Field(description="index into `stages` the parcel has reached")
    stages: list[str]
    promised_date: str | None
    service: str | None
    origin: AddressOut
    destination: AddressOut
    recipient: RecipientOut
    events: list[EventOut] = Field(description="newest first")
    erased: bool
    removed: dict[str, str] = Field(
        default_factory=dict,
        description="personal fields this tier would see whose values were removed, with "
        'why: "removed after its retention period"',
    )
    tenant: str | None = None
    reference: str | None = None


class IngestOut(BaseModel):
    accepted: int
    duplicates: int


class VerifiedOut(BaseModel):
    tier: str
    expires_at: str


class ProblemOut(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, object]] | None = None


class LedgerEntryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int
    kind: str = Field(description="access | event | consent | erasure | key_rotation | ...")
    leaf_hash: str = Field(description="base64 RFC 6962 leaf hash")
    created_at: str
    body: dict[str, object] | None = Field(
        description="the entry (canonical JSON: sorted keys, no spaces, UTF-8, as hashed); "
        "null when erased or withheld"
    )
    salt: str | None = Field(description="base64; given together with the body only")
    erased: bool = Field(description="the body and salt were deleted with their subject")
    withheld: bool = Field(
        description="the body exists but is shown only to the shipment's verified recipient"
    )


class InclusionProofOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int
    size: int
    leaf_hash: str = Field(description="base64")
    proof: list[str] = Field(description="base64 hashes, from the leaf's sibling upwards")
    root: str = Field(description="base64 root of the tree of `size` leaves")


class ConsistencyProofOut(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    proof: list[str] = Field(description="base64 hashes (RFC 9162 section 2.1.4)")
    root_from: str = Field(description="base64 root of the tree of `from` leaves")
    root_to: str = Field(description="base64 root of the tree of `to` leaves")


class AccessOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str
    tier: str = Field(description="merchant | carrier | courier | support | admin | ...")
    actor: str = Field(
        description='who: a tenant\'s name, "courier on route of ...", or a staff '
        'pseudonym such as "support agent #a1b2" (never a staff name)'
    )
    fields: list[str] = Field(description="policy field names, e.g. recipient.name")
    field_labels: list[str] = Field(description="the same, as the privacy notice names them")
    purpose: str
    reason: str | None = Field(description="reason code of a staff reveal")
    reason_label: str | None
    ledger_index: int | None = Field(description="the entry in the ledger; null until sequenced")
    entry_url: str | None
    proof_url: str | None = Field(
        description="inclusion proof against the latest signed checkpoint, once one covers it"
    )


class AccessLogOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accesses: list[AccessOut] = Field(description="newest first")
    truncated: bool = Field(description="older accesses exist beyond the newest 500")


class ConsentOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(description="notify_email | notify_sms | share_live_location | analytics")
    label: str = Field(description="what the purpose means, as the privacy centre words it")
    granted: bool = Field(description="false until the person opts in")
    notice_version: str | None = Field(
        description="version of the privacy notice shown when this was last changed; "
        "null if it never was"
    )
    source: str | None = Field(description="where it was last changed, e.g. recipient_api")
    at: str | None = Field(description="when it was last changed; null if it never was")


class ConsentsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notice_version: str = Field(
        description="version of the privacy notice in force (at /privacy): send it back "
        "when the person gives a consent"
    )
    notice_url: str
    consents: list[ConsentOut] = Field(description="every purpose, in a fixed order")


class ConsentChangeOut(ConsentOut):
    changed: bool = Field(description="false when the request asked for what was in force")


class ConsentHistoryLineOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str
    granted: bool
    notice_version: str
    source: str
    at: str


class ConsentHistoryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[ConsentHistoryLineOut] = Field(description="every change, newest first")


class AddressCorrectionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corrected: list[str] = Field(
        description="policy names of the fields that changed, e.g. destination.street; "
        "empty when every value was already as sent"
    )
    at: str | None = Field(description="when; null if nothing changed")
