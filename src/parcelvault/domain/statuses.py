from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    INFO_RECEIVED = "info_received"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    FAILED_ATTEMPT = "failed_attempt"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    RETURNED_TO_SENDER = "returned_to_sender"
    EXPIRED = "expired"


class Reason(StrEnum):
    ADDRESS_PROBLEM = "address_problem"
    RECIPIENT_ABSENT = "recipient_absent"
    REFUSED = "refused"
    DAMAGED = "damaged"
    LOST = "lost"
    CUSTOMS = "customs"
    WEATHER = "weather"
    OTHER = "other"


STATUSES_WITH_REASON = frozenset({Status.EXCEPTION, Status.FAILED_ATTEMPT})
FINAL_STATUSES = frozenset({Status.DELIVERED, Status.RETURNED_TO_SENDER, Status.EXPIRED})

# The four stages a person sees on the progress bar. Every status maps to the
# stage it belongs to; problems keep the stage the parcel had reached.
STAGES: tuple[str, ...] = ("Label created", "On its way", "Out for delivery", "Delivered")

_STAGE_OF: dict[Status, int] = {
    Status.PENDING: 0,
    Status.INFO_RECEIVED: 0,
    Status.IN_TRANSIT: 1,
    Status.EXCEPTION: 1,
    Status.RETURNED_TO_SENDER: 1,
    Status.EXPIRED: 1,
    Status.OUT_FOR_DELIVERY: 2,
    Status.FAILED_ATTEMPT: 2,
    Status.AVAILABLE_FOR_PICKUP: 2,
    Status.DELIVERED: 3,
}

LABELS: dict[Status, str] = {
    Status.PENDING: "Pending",
    Status.INFO_RECEIVED: "Label created",
    Status.IN_TRANSIT: "In transit",
    Status.OUT_FOR_DELIVERY: "Out for delivery",
    Status.FAILED_ATTEMPT: "Delivery attempted",
    Status.AVAILABLE_FOR_PICKUP: "Ready for pickup",
    Status.DELIVERED: "Delivered",
    Status.EXCEPTION: "Problem",
    Status.RETURNED_TO_SENDER: "Returned to sender",
    Status.EXPIRED: "No longer tracked",
}

REASON_LABELS: dict[Reason, str] = {
    Reason.ADDRESS_PROBLEM: "problem with the address",
    Reason.RECIPIENT_ABSENT: "nobody was available",
    Reason.REFUSED: "delivery refused",
    Reason.DAMAGED: "parcel damaged",
    Reason.LOST: "parcel lost",
    Reason.CUSTOMS: "held by customs",
    Reason.WEATHER: "weather",
    Reason.OTHER: "other",
}


def stage_of(status: Status) -> int:
    """Index into STAGES reached by a parcel whose current status is `status`."""
    return _STAGE_OF[status]


def is_problem(status: Status) -> bool:
    return status in {Status.FAILED_ATTEMPT, Status.EXCEPTION, Status.RETURNED_TO_SENDER}
