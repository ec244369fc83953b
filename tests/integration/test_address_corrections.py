"""Address corrections on SQLite and PostgreSQL: allowed before the parcel is out for
delivery and after the courier reports a problem with the address, re-sealed under the
subject's key, logged by field name (a table row and a ledger entry), visible at once
(version bump), and refused for bad values and erased subjects."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from parcelvault.adapters.db.tables import (
    address_corrections,
    ledger_entries,
    sealed_fields,
    shipments,
)
from parcelvault.domain.errors import Conflict, Gone, InvalidInput, NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.services import corrections, erasure, tracking
from parcelvault.services.tracking import WrongPostcode
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.integration.subject_helpers import plant, scan, version_of


def recipient_view(vault: Vault, number: str, shipment_id: str) -> tracking.TrackingView:
    resolved = tracking.resolve(vault=vault, raw_number=number, cookies={})
    as_recipient = tracking.Resolved(shipment_id, resolved.version, tracking.RECIPIENT)
    return tracking.view_of(vault=vault, resolved=as_recipient)


def correction_rows(vault: Vault) -> list[tuple[str, str, str]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(address_corrections).order_by(address_corrections.c.id)
        ).all()
    return [(r.shipment_id, r.fields, r.source) for r in rows]


def correct(vault: Vault, shipment_id: str, **changes: str) -> corrections.Correction:
    return corrections.correct_address(
        vault=vault,
        shipment_id=shipment_id,
        changes={f"destination.{name}": value for name, value in changes.items()},
        source="recipient_api",
    )


def test_a_street_corrected_in_transit_shows_at_once_and_is_logged_by_name(
    any_vault: Vault,
) -> None:
    number, shipment, _ = plant(any_vault)
    scan(any_vault, number, "in_transit")
    before = recipient_view(any_vault, number, shipment)
    version = version_of(any_vault, shipment)

    done = correct(any_vault, shipment, street="Flat 2\n 14 Corrected Road ")

    after = recipient_view(any_vault, number, shipment)
    assert before.personal["destination.street"] == "12 Example Street"
    assert after.personal["destination.street"] == "Flat 2\n14 Corrected Road"
    assert after.personal["destination.postcode"] == before.personal["destination.postcode"]
    assert done.fields == ("destination.street",)
    assert version_of(any_vault, shipment) == version + 1
    assert correction_rows(any_vault) == [(shipment, "destination.street", "recipient_api")]


def test_a_corrected_postcode_verifies_and_the_old_one_no_longer_does(any_vault: Vault) -> None:
    number, shipment, _ = plant(any_vault)

    correct(any_vault, shipment, postcode="LS2 7EE")

    with pytest.raises(WrongPostcode):
        tracking.verify_postcode(vault=any_vault, raw_number=number, postcode="LS1 4AP")
    granted = tracking.verify_postcode(vault=any_vault, raw_number=number, postcode="ls27ee")
    assert granted.shipment_id == shipment
    assert recipient_view(any_vault, number, shipment).personal["destination.postcode"] == "LS2 7EE"


def test_notes_can_be_added_and_removed(any_vault: Vault) -> None:
    number, shipment, _ = plant(any_vault)

    correct(any_vault, shipment, notes="Leave with the neighbour at 14")
    added = recipient_view(any_vault, number, shipment).personal
    correct(any_vault, shipment, notes="  ")
    removed = recipient_view(any_vault, number, shipment).personal

    assert added["destination.notes"] == "Leave with the neighbour at 14"
    assert "destination.notes" not in removed
    assert [fields for _, fields, _ in correction_rows(any_vault)] == ["destination.notes"] * 2


def test_several_fields_in_one_correction_are_one_record_and_one_bump(any_vault: Vault) -> None:
    _number, shipment, _ = plant(any_vault)
    version = version_of(any_vault, shipment)

    done = correct(any_vault, shipment, street="1 New Street", postcode="LS3 1AA", notes="Gate B")

    assert done.fields == ("destination.notes", "destination.postcode", "destination.street")
    assert version_of(any_vault, shipment) == version + 1
    assert correction_rows(any_vault) == [
        (shipment, "destination.notes,destination.postcode,destination.street", "recipient_api")
    ]


def test_asking_for_the_address_already_stored_writes_nothing(any_vault: Vault) -> None:
    _, shipment, _ = plant(any_vault)
    version = version_of(any_vault, shipment)

    done = correct(any_vault, shipment, street="12 Example Street", postcode=" LS1 4AP ", notes="")

    assert done.fields == ()
    assert version_of(any_vault, shipment) == version
    assert correction_rows(any_vault) == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("out_for_delivery", None),
        ("delivered", None),
        ("failed_attempt", None),
        ("failed_attempt", "recipient_absent"),
        ("exception", None),
        ("exception", "damaged"),
        ("available_for_pickup", None),
        ("expired", None),
    ],
)
def test_no_correction_once_out_for_delivery_unless_the_address_was_the_problem(
    any_vault: Vault, status: str, reason: str | None
) -> None:
    number, shipment, _ = plant(any_vault)
    scan(any_vault, number, "in_transit")
    scan(any_vault, number, status, reason=reason)
    version = version_of(any_vault, shipment)

    with pytest.raises(Conflict) as refused:
        correct(any_vault, shipment, street="1 Too Late Lane")

    assert f"its status is {status}" in str(refused.value)
    assert version_of(any_vault, shipment) == version
    assert correction_rows(any_vault) == []
    view = recipient_view(any_vault, number, shipment)
    assert view.personal["destination.street"] == "12 Example Street"


@pytest.mark.parametrize("status", ["failed_attempt", "exception"])
def test_a_problem_with_the_address_opens_it_to_correction_until_the_next_scan(
    any_vault: Vault, status: str
) -> None:
    number, shipment, _ = plant(any_vault)
    scan(any_vault, number, "out_for_delivery")
    scan(any_vault, number, status, reason="address_problem")

    assert correct(any_vault, shipment, street="4 Right Road").fields == ("destination.street",)
    view = recipient_view(any_vault, number, shipment)
    assert view.personal["destination.street"] == "4 Right Road"

    scan(any_vault, number, "out_for_delivery")  # the next attempt is under way
    with pytest.raises(Conflict) as refused:
        correct(any_vault, shipment, street="5 Later Road")
    assert "its status is out_for_delivery" in str(refused.value)


@pytest.mark.parametrize("status", ["pending", "info_received", "in_transit"])
def test_corrections_are_allowed_in_every_status_before_out_for_delivery(
    any_vault: Vault, status: str
) -> None:
    number, shipment, _ = plant(any_vault)
    if status != "pending":
        scan(any_vault, number, status)

    assert correct(any_vault, shipment, street="3 Early Street").fields == ("destination.street",)


@pytest.mark.parametrize(
    ("changes", "locations"),
    [
        ({}, [()]),
        ({"destination.city": "Bradford"}, [("city",)]),
        ({"recipient.name": "Somebody"}, [("name",)]),
        ({"destination.street": ""}, [("street",)]),
        ({"destination.street": " \n "}, [("street",)]),
        ({"destination.street": "a\n\nb"}, [("street", 1)]),
        ({"destination.street": "\n".join(["x"] * 5)}, [("street",)]),
        ({"destination.street": "x" * 201}, [("street", 0)]),
        ({"destination.street": "tab\there"}, [("street", 0)]),
        ({"destination.postcode": "A"}, [("postcode",)]),
        ({"destination.postcode": "X" * 13}, [("postcode",)]),
        ({"destination.postcode": "--"}, [("postcode",)]),
        ({"destination.postcode": "LS1\x00"}, [("postcode",)]),
        ({"destination.notes": "n" * 301}, [("notes",)]),
        ({"destination.notes": "bell\x07"}, [("notes",)]),
        ({"destination.street": "", "destination.postcode": "A"}, [("street",), ("postcode",)]),
    ],
)
def test_bad_corrections_are_invalid_input_naming_each_field(
    any_vault: Vault, changes: dict[str, str], locations: list[tuple[object, ...]]
) -> None:
    _, shipment, _ = plant(any_vault)
    version = version_of(any_vault, shipment)

    with pytest.raises(InvalidInput) as refused:
        corrections.correct_address(
            vault=any_vault, shipment_id=shipment, changes=changes, source="recipient_api"
        )

    assert [p.loc for p in refused.value.problems] == locations
    assert version_of(any_vault, shipment) == version


@pytest.mark.parametrize("clean_up", [False, True])
def test_an_erased_subject_has_no_address_to_correct(any_vault: Vault, clean_up: bool) -> None:
    _, shipment, subject = plant(any_vault)
    erasure.erase_subject(
        vault=any_vault, subject_id=subject, requested_by="operator", clean_up=clean_up
    )

    with pytest.raises(Gone, match="erased"):
        correct(any_vault, shipment, street="1 Ghost Road")

    assert correction_rows(any_vault) == []


def test_an_unknown_shipment_is_not_found(any_vault: Vault) -> None:
    with pytest.raises(NotFound):
        correct(any_vault, "0" * 32, street="1 Nowhere")


def test_the_new_values_are_sealed_for_their_subject_record_and_field(any_vault: Vault) -> None:
    _, shipment, subject = plant(any_vault)

    correct(any_vault, shipment, street="9 Sealed Street", postcode="LS9 9SS")

    with any_vault.engine.connect() as connection:
        rows = connection.execute(
            select(sealed_fields).where(sealed_fields.c.record_id == shipment)
        ).all()
        digest = connection.execute(
            select(shipments.c.postcode_digest).where(shipments.c.id == shipment)
        ).scalar_one()
    by_field = {row.field: row for row in rows}
    assert by_field["destination.street"].subject_id == subject
    assert b"Sealed" not in by_field["destination.street"].value
    assert b"LS9" not in digest
    assert b"LS9" not in by_field["destination.postcode"].value
    assert len([r for r in rows if r.field == "destination.street"]) == 1


def test_a_corrected_canary_street_never_reaches_the_raw_sqlite_file(
    vault: Vault, canaries: Canaries
) -> None:
    number, shipment, _ = plant(vault)

    correct(vault, shipment, street=canaries.street, postcode=canaries.postcode)

    view = recipient_view(vault, number, shipment)
    assert view.personal["destination.street"] == canaries.street
    database = Path(make_url(vault.settings.database_url).database or "")
    raw = b"".join(
        path.read_bytes()
        for path in database.parent.iterdir()
        if path.name.startswith(database.name)
    )
    assert canaries.found_in(raw) == []


def ledger_bodies(vault: Vault, kind: str) -> list[tuple[int, bytes | None]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(ledger_entries.c.idx, ledger_entries.c.body)
            .where(ledger_entries.c.kind == kind)
            .order_by(ledger_entries.c.idx)
        ).all()
    return [(int(r.idx), r.body) for r in rows]


def test_a_correction_is_a_ledger_entry_naming_its_fields_but_not_their_values(
    any_vault: Vault, canaries: Canaries
) -> None:
    _, shipment, subject = plant(any_vault)
    correct(any_vault, shipment, street=canaries.street, postcode=canaries.postcode)

    ledger_log.sequence(any_vault.engine, now=any_vault.clock())

    [(index, body)] = ledger_bodies(any_vault, "correction")
    assert body is not None
    entry = orjson.loads(body)
    assert entry["shipment"] == shipment
    assert entry["subject"] == subject
    assert entry["fields"] == ["destination.postcode", "destination.street"]
    assert entry["source"] == "recipient_api"
    assert canaries.street.encode() not in body
    assert canaries.postcode.encode() not in body
    with any_vault.engine.connect() as connection:
        assert ledger_log.index_of_ref(connection, corrections.ledger_ref(entry["correction"])) == (
            index
        )
        [past] = corrections.history(connection, [shipment])[shipment]
    assert (past.fields, past.ledger_index) == (
        ("destination.postcode", "destination.street"),
        index,
    )


def test_asking_for_the_stored_address_adds_no_ledger_entry(any_vault: Vault) -> None:
    _, shipment, _ = plant(any_vault)

    correct(any_vault, shipment, street="12 Example Street")
    ledger_log.sequence(any_vault.engine, now=any_vault.clock())

    assert ledger_bodies(any_vault, "correction") == []


@pytest.mark.parametrize("sequenced_first", [True, False])
def test_erasing_the_subject_erases_the_body_of_its_correction_entries(
    any_vault: Vault, sequenced_first: bool
) -> None:
    _, shipment, subject = plant(any_vault)
    _, other_shipment, _ = plant(any_vault, recipient={"name": "Other Person", "email": "o@x.test"})
    correct(any_vault, shipment, street="1 First Road")
    correct(any_vault, other_shipment, street="2 Other Road")
    if sequenced_first:
        ledger_log.sequence(any_vault.engine, now=any_vault.clock())

    erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="operator")
    ledger_log.sequence(any_vault.engine, now=any_vault.clock())

    bodies = [body for _, body in ledger_bodies(any_vault, "correction")]
    assert len(bodies) == 2
    assert bodies.count(None) == 1
    kept = orjson.loads(next(body for body in bodies if body is not None))
    assert kept["shipment"] == other_shipment
