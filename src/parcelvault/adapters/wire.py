"""The JSON wire format shared by the HTTP API and the importer (pydantic models),
and its conversion into domain values. Unknown keys are rejected so typos surface."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
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

NO_NUL = r"^[^\x00]*$"
"""Text may not hold NUL: PostgreSQL cannot store it. Checked as a pattern, in the
validator's compiled code, so the check costs nothing per field in Python."""

Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$", to_upper=True)]
Text100 = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)
]
Postcode = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=12, pattern=NO_NUL)
]
TrackingNumberIn = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=4, max_length=60, pattern=NO_NUL)
]
TenantName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=NO_NUL)
]
EventId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$"
    ),
]


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset")
    return value


EventTime = Annotated[AwareDatetime, BeforeValidator(_text_only)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)


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
            StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL),
        ]
    ] = Field(min_length=1, max_length=4)
    notes: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=300, pattern=NO_NUL)]
        | None
    ) = Field(default=None, description="delivery notes for the courier (personal)")


class RecipientIn(_Strict):
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
    ]
    email: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True,
                max_length=254,
                pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$",
            ),
        ]
        | None
    ) = None
    phone: (
        Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()\-./]{4,30}$")]
        | None
    ) = None


class _ShipmentFields(_Strict):
    tracking_number: TrackingNumberIn | None = None
    reference: Text100 | None = None
    service: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=NO_NUL)]
        | None
    ) = None
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


class ShipmentIn(_ShipmentFields):
    carrier: TenantName | None = Field(
        default=None, description="name of the tenant that will carry the shipment"
    )


class LocationIn(_Strict):
    country: Country | None = None
    region: Text100 | None = None
    city: Text100 | None = None
    facility: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=NO_NUL)]
        | None
    ) = None


class GeoIn(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ProofIn(_Strict):
    received_by: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=200, pattern=NO_NUL)]
        | None
    ) = None
    signature: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None
    photo: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None
    geo: GeoIn | None = None

    def to_domain(self) -> Proof:
        return Proof(
            received_by=self.received_by or None,
            signature=self.signature or None,
            photo=self.photo or None,
            geo=(self.geo.lat, self.geo.lon) if self.geo else None,
        )


class EventIn(_Strict):
    event_id: EventId
    time: EventTime
    status: Status
    reason: Reason | None = None
    description: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=500, pattern=NO_NUL)]
        | None
    ) = None
    location: LocationIn | None = None
    proof: ProofIn | None = None

    def to_domain(self) -> ScanEvent:
        return ScanEvent(
            event_id=self.event_id,
            time=self.time,
            status=self.status,
            reason=self.reason,
            description=self.description or None,
            location=Location(
                country=self.location.country,
                region=self.location.region,
                city=self.location.city,
                facility=self.location.facility,
            )
            if self.location
            else None,
            proof=self.proof.to_domain() if self.proof else None,
        )


class BatchEventIn(EventIn):
    tracking_number: TrackingNumberIn


class ShipmentLine(_ShipmentFields):
    type: Literal["shipment"]


class EventLine(BatchEventIn):
    type: Literal["event"]


ImportLine = Annotated[ShipmentLine | EventLine, Field(discriminator="type")]
