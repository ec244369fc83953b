"""A chunk validated in the importer's second process reaches the writer whole: what
`_pack` takes apart, `_unpack` puts back together, field for field."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import orjson

from parcelvault.crypto.keyring import Keyring, Keys, create_key_folder
from parcelvault.crypto.keystore import StoredKey
from parcelvault.domain.shipments import Destination, NewShipment, Origin, Recipient
from parcelvault.privacy.policy import load_default_policy
from parcelvault.services import importer

FULL_SHIPMENT = {
    "type": "shipment",
    "tracking_number": "CARRIER-0001",
    "reference": "ORD-1",
    "service": "next_day",
    "origin": {"country": "GB", "region": "England", "city": "Leeds", "postcode": "LS1 4AP"},
    "destination": {
        "country": "GB",
        "region": "Scotland",
        "city": "Glasgow",
        "postcode": "G1 1AA",
        "street": ["canary-street-1", "canary-street-2"],
    },
    "recipient": {"name": "canary-name", "email": "canary@example.org", "phone": "+44 1"},
    "promised_date": "2026-12-01",
}
EVENT_WITH_PROOF = {
    "type": "event",
    "tracking_number": "CARRIER-0001",
    "event_id": "e-1",
    "time": "2026-11-29T10:00:00+01:00",
    "status": "delivered",
    "location": {"country": "GB", "city": "Glasgow", "facility": "GLA-1"},
    "proof": {"received_by": "canary-receiver", "geo": {"lat": 55.86, "lon": -4.25}},
}


def _chunk(tmp_path: Path) -> importer._Chunk:
    create_key_folder(tmp_path / "keys")
    shaping = importer._Shaping(
        text_stamps=True,
        keyring=Keyring(Keys.load(tmp_path / "keys")),
        policy=load_default_policy(),
    )
    lines = [
        (1, orjson.dumps(FULL_SHIPMENT)),
        (2, orjson.dumps(EVENT_WITH_PROOF)),
        (3, orjson.dumps({**FULL_SHIPMENT, "tracking_number": None})),
        (4, importer.LineProblem(importer.WHOLE_LINE, "is longer than 64 KiB")),
    ]
    return importer._validate(lines, csv_names=False, shaping=shaping)


def test_a_packed_chunk_unpacks_to_an_equal_chunk(tmp_path: Path) -> None:
    chunk = _chunk(tmp_path)
    assert [len(chunk.shipments), len(chunk.events), len(chunk.presealed)] == [1, 1, 1]
    assert sorted(chunk.problems) == [3, 4]
    assert importer._unpack(importer._pack(chunk)) == chunk


def test_every_field_of_a_shipment_and_its_presealed_key_travels() -> None:
    every_field_set = NewShipment(
        Origin("GB", "Leeds", "LS1", "England"),
        Destination("GB", "Glasgow", "G1", ("1 Road",), "Scotland", "ring twice"),
        Recipient("A", "a@example.org", "+44 1"),
        "CARRIER-0001",
        "ORD-1",
        "next_day",
        date(2026, 12, 1),
    )
    key = StoredKey("subject", "key-id", 3, b"wrapped")
    parts = (
        every_field_set,
        *(getattr(every_field_set, n) for n in ("origin", "destination", "recipient")),
        key,
    )
    for part in parts:
        # A field added to one of these classes must be added here and to the packing.
        unset = [f.name for f in dataclasses.fields(part) if getattr(part, f.name) is None]
        assert not unset, f"{type(part).__name__}: {unset}"
    assert importer._shipment_of(importer._shipment_fields(7, every_field_set)) == (
        7,
        every_field_set,
    )
    early = importer.ingest.Presealed(
        "N", True, None, "subject", key, "record", b"digest", (("recipient.name", b"x"),)
    )
    assert importer._presealed_of(importer._presealed_fields(early)) == early
