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
