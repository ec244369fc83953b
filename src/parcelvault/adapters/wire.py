"""The JSON wire format shared by the HTTP API and the importer (pydantic models),
and its conversion into domain values. Unknown keys are rejected so typos surface."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from parcelvault.domain.shipments import (
    Destination,
    Location,
    NewShipment,
    Origin,
    Proof,
    Recipient,
    ScanEvent,
)
from parcelvault.domain.statuses import Reason, Status

Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$", to_upper=True)]
Text100 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Postcode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=12)]
TrackingNumberIn = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=4, max_length=60)
]
EventId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$"
    ),
]


def _no_nul(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset")
    return value


EventTime = Annotated[AwareDatetime, BeforeValidator(_text_only)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: object) -> object:
        """PostgreSQL text cannot hold NUL; refuse it here instead of failing an insert."""
        return _no_nul(value)


class OriginIn(_Strict):
    country: Country
    region: Text100 | None = None
    city: Text100
    postcode: Postcode


class DestinationIn(_Strict):
    country: Country
    region: Text100 | None = None
    city: Text100
    postcode: Postcode
    street: list[
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
            AfterValidator(_no_nul),
        ]
    ] = Field(min_length=1, max_length=4)
    notes: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)] | None = Field(
        default=None, description="delivery notes for the courier (personal)"
    )


class RecipientIn(_Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    email: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
            ),
        ]
        | None
    ) = None
    phone: (
        Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()\-./]{4,30}$")]
        | None
    ) = None


class ShipmentIn(_Strict):
    tracking_number: TrackingNumberIn | None = None
    reference: Text100 | None = None
    service: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    origin: OriginIn
    destination: DestinationIn
    recipient: RecipientIn
    promised_date: date | None = None

    def to_domain(self) -> NewShipment:
        return NewShipment(
            tracking_number=self.tracking_number,
            reference=self.reference,
            service=self.service,
            origin=Origin(
                country=self.origin.country,
                region=self.origin.region,
                city=self.origin.city,
                postcode=self.origin.postcode,
            ),
            destination=Destination(
                country=self.destination.country,
                region=self.destination.region,
                city=self.destination.city,
                postcode=self.destination.postcode,
                street=tuple(self.destination.street),
                notes=self.destination.notes or None,
            ),
            recipient=Recipient(
                name=self.recipient.name, email=self.recipient.email, phone=self.recipient.phone
            ),
            promised_date=self.promised_date,
        )


class LocationIn(_Strict):
    country: Country | None = None
    region: Text100 | None = None
    city: Text100 | None = None
    facility: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None


class GeoIn(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ProofIn(_Strict):
    received_by: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = (
        None
    )
    signature: Annotated[str, StringConstraints(max_length=200)] | None = None
    photo: Annotated[str, StringConstraints(max_length=200)] | None = None
    geo: GeoIn | None = None


class EventIn(_Strict):
    event_id: EventId
    time: EventTime
    status: Status
    reason: Reason | None = None
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = (
        None
    )
    location: LocationIn | None = None
    proof: ProofIn | None = None

    def to_domain(self) -> ScanEvent:
        return ScanEvent(
            event_id=self.event_id,
            time=self.time,
            status=self.status,
            reason=self.reason,
            description=self.description or None,
            location=Location(**self.location.model_dump()) if self.location else None,
            proof=Proof(
                received_by=self.proof.received_by or None,
                signature=self.proof.signature or None,
                photo=self.proof.photo or None,
                geo=(self.proof.geo.lat, self.proof.geo.lon) if self.proof.geo else None,
            )
            if self.proof
            else None,
        )


class BatchEventIn(EventIn):
    tracking_number: TrackingNumberIn


class ShipmentLine(ShipmentIn):
    type: Literal["shipment"]


class EventLine(BatchEventIn):
    type: Literal["event"]


ImportLine = Annotated[ShipmentLine | EventLine, Field(discriminator="type")]
