"""Synthetic shipments and scan events in the import format (JSON Lines), seeded so
every run stores the same kind of data. All personal values are made up."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from parcelvault.domain import tracking_numbers

CITIES = [
    ("GB", "Greater London", "London"),
    ("GB", "West Yorkshire", "Leeds"),
    ("GB", "Greater Manchester", "Manchester"),
    ("DE", "Berlin", "Berlin"),
    ("DE", "Bayern", "München"),
    ("FR", "Île-de-France", "Paris"),
    ("NL", "Noord-Holland", "Amsterdam"),
    ("ES", "Madrid", "Madrid"),
    ("IT", "Lombardia", "Milano"),
    ("PL", "Mazowieckie", "Warszawa"),
]
MIDDLE = ["in_transit"] * 6 + ["out_for_delivery", "failed_attempt"]


def _number(rng: random.Random) -> str:
    return tracking_numbers.issue(rng.getrandbits)


def shipment_line(rng: random.Random, index: int, number: str) -> dict[str, Any]:
    origin = CITIES[index % len(CITIES)]
    dest = CITIES[(index * 7 + 3) % len(CITIES)]
    return {
        "type": "shipment",
        "tracking_number": number,
        "reference": f"order-{index:07d}",
        "service": "standard",
        "origin": {
            "country": origin[0],
            "region": origin[1],
            "city": origin[2],
            "postcode": f"O{rng.randrange(10_000, 99_999)}",
        },
        "destination": {
            "country": dest[0],
            "region": dest[1],
            "city": dest[2],
            "postcode": f"P{rng.randrange(10_000, 99_999)}",
            "street": [f"{rng.randrange(1, 300)} Benchmark Street", f"Flat {index % 40 + 1}"],
        },
        "recipient": {
            "name": f"Bench Person {index}",
            "email": f"person{index}@bench.example",
            "phone": f"+44 7700 {index % 1_000_000:06d}",
        },
        "promised_date": "2026-12-02",
    }


def event_lines(
    rng: random.Random, index: int, number: str, count: int, start: datetime, tag: str
) -> Iterator[dict[str, Any]]:
    """`count` events of one shipment: label created, transit scans, delivered (with a
    proof of delivery) last. Times are increasing and all before `start` + count hours."""
    for step in range(count):
        if step == 0:
            status = "info_received"
        elif step == count - 1:
            status = "delivered"
        else:
            status = MIDDLE[(index + step) % len(MIDDLE)]
        country, region, city = CITIES[(index + step) % len(CITIES)]
        event: dict[str, Any] = {
            "type": "event",
            "tracking_number": number,
            "event_id": f"{tag}-{index}-{step}",
            "time": (start + timedelta(hours=step, minutes=rng.randrange(60))).isoformat(),
            "status": status,
            "description": f"Scanned at {city} hub",
            "location": {
                "country": country,
                "region": region,
                "city": city,
                "facility": f"HUB-{(index + step) % 97:03d}",
            },
        }
        if status == "failed_attempt":
            event["reason"] = "recipient_absent"
        if status == "delivered":
            event["proof"] = {"received_by": f"Bench Person {index}", "signature": f"sig-{index}"}
        yield event


def lines(
    *, seed: int, shipments: int, events_each: int, now: datetime, tag: str = "ev"
) -> Iterator[dict[str, Any]]:
    """Each shipment line followed by its `events_each` event lines."""
    rng = random.Random(seed)
    for index in range(shipments):
        number = _number(rng)
        yield shipment_line(rng, index, number)
        start = now - timedelta(days=rng.randrange(3, 30), hours=events_each)
        yield from event_lines(rng, index, number, events_each, start, tag)


def write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> tuple[int, int]:
    """Write rows as JSON Lines; returns (shipment lines, event lines)."""
    counts = {"shipment": 0, "event": 0}
    with path.open("wb") as handle:
        for row in rows:
            counts[row["type"]] += 1
            handle.write(orjson.dumps(row))
            handle.write(b"\n")
    return counts["shipment"], counts["event"]
