"""JSON form of disclosed views. Input is always a TrackingView that `disclose` has
already filtered for its tier; nothing here decides what a tier may see."""

from __future__ import annotations

from typing import Any

from parcelvault.services.tracking import RETENTION_NOTE, Place, TimelineEntry, TrackingView


def nest(personal: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{"recipient.name": v} -> {"recipient": {"name": v}}; street lines become a list."""
    nested: dict[str, dict[str, Any]] = {}
    for name, value in personal.items():
        group, _, leaf = name.partition(".")
        nested.setdefault(group, {})[leaf] = value.split("\n") if leaf == "street" else value
    return nested


def _place(place: Place, *, facility: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"country": place.country, "region": place.region, "city": place.city}
    if facility:
        body["facility"] = place.facility
    return body


def _event(entry: TimelineEntry, *, facility: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "time": entry.time.isoformat(),
        "status": entry.status.value,
        "label": entry.label,
        "reason": entry.reason.value if entry.reason else None,
        "reason_label": entry.reason_label,
        "description": entry.description,
        "location": _place(entry.place, facility=facility),
    }
    if entry.proof:
        proof = nest(entry.proof).get("proof")
        if proof:
            body["proof"] = proof
    return body


def view_to_json(view: TrackingView) -> dict[str, Any]:
    personal = nest(view.personal)
    facility = view.tier not in ("public",)
    body: dict[str, Any] = {
        "tier": view.tier,
        "tracking_number": view.tracking_number,
        "display_number": view.display_number,
        "status": view.status.value,
        "status_label": view.status_label,
        "status_at": view.status_at.isoformat() if view.status_at else None,
        "stage": view.stage,
        "stages": list(view.stages),
        "promised_date": view.promised_date.isoformat() if view.promised_date else None,
        "service": view.service,
        "origin": {**_place(view.origin, facility=False), **personal.get("origin", {})},
        "destination": {
            **_place(view.destination, facility=False),
            **personal.get("destination", {}),
        },
        "recipient": personal.get("recipient", {}),
        "events": [_event(entry, facility=facility) for entry in view.timeline],
        "erased": view.erased,
        "removed": {name: RETENTION_NOTE for name in view.removed},
    }
    if view.tenant is not None:
        body["tenant"] = view.tenant
        body["reference"] = view.reference
    return body
