"""Erasure by crypto-shredding: what it removes, what it keeps, legal holds, and why
restoring a backup of either the database or the key store does not bring anyone back."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from parcelvault.adapters.db.tables import (
    access_records,
    erasures,
    events,
    ledger_entries,
    sealed_fields,
    shipments,
    subjects,
)
from parcelvault.crypto import keyed_hash
from parcelvault.crypto.keystore import KeyStore, default_url
from parcelvault.domain.errors import NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.services import erasure, export, holds, ledger_audit, tenants
from parcelvault.services.vault import Vault, build
from tests.conftest import Canaries, bearer, make_vault
from tests.integration.subject_helpers import give
from tests.races import Meanwhile, after_first_call


def _ship(client: TestClient, key: str, canaries: Canaries, *, delivered: bool = True) -> str:
    created = client.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    number: str = created.json()["tracking_number"]
    if delivered:
        event = {
            "event_id": f"pod-{number}",
            "time": "2026-01-05T14:02:00+01:00",
            "status": "delivered",
            "proof": {"received_by": canaries.received_by, "signature": canaries.signature},
        }
        posted = client.post(f"/api/v1/shipments/{number}/events", json=event, headers=bearer(key))
        assert posted.status_code == 201, posted.text
    return number


def _subject(vault: Vault, canaries: Canaries) -> str:
    subject = keyed_hash.subject_id(vault.keyring.lookup_key, email=canaries.email, phone=None)
    assert subject is not None
    return subject


def _merchant_view(client: TestClient, key: str, number: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/shipments/{number}", headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_erasure_makes_every_personal_value_unreadable_and_keeps_the_journey(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    first = _ship(any_client, any_shop_key, canaries)
    second = _ship(any_client, any_shop_key, canaries, delivered=False)
    assert _merchant_view(any_client, any_shop_key, first)["recipient"]["name"] == canaries.name
    subject = _subject(any_vault, canaries)
    ledger_log.sequence(any_vault.engine, now=any_vault.clock())

    receipt = erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")

    assert receipt.shipments == 2
    for number in (first, second):
        view = _merchant_view(any_client, any_shop_key, number)
        assert view["erased"] is True
        assert canaries.found_in(str(view)) == []
    assert _merchant_view(any_client, any_shop_key, first)["status"] == "delivered"
    assert any_vault.keystore.get_one(subject) is None
    with any_vault.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(sealed_fields)).scalar() == 0
        assert connection.execute(select(subjects).where(subjects.c.id == subject)).first() is None
        linked = select(func.count()).where(shipments.c.subject_id == subject)
        assert connection.execute(linked.select_from(shipments)).scalar() == 0
        digests = connection.execute(select(shipments.c.postcode_digest)).scalars().all()
        assert set(digests) == {keyed_hash.ERASED_DIGEST}
        about = connection.execute(
            select(ledger_entries.c.body, ledger_entries.c.salt).where(
                ledger_entries.c.kind == "event"
            )
        ).all()
        assert about
        assert all(row.body is None and row.salt is None for row in about)


def _bodies_by_kind(vault: Vault) -> dict[str, list[bytes | None]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(ledger_entries.c.kind, ledger_entries.c.body).order_by(ledger_entries.c.idx)
        ).all()
    found: dict[str, list[bytes | None]] = {}
    for kind, body in rows:
        found.setdefault(kind, []).append(body)
    return found


def test_entries_about_the_subject_lose_their_bodies_whether_placed_before_or_after_erasure(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    number = _ship(any_client, any_shop_key, canaries, delivered=False)
    _merchant_view(any_client, any_shop_key, number)
    subject = _subject(any_vault, canaries)
    give(any_vault, subject, "notify_email")
    ledger_log.sequence(any_vault.engine, now=any_vault.clock())
    # Still waiting for the sequencer when the erasure comes: an event, a look, a consent.
    late = {"event_id": "late-scan", "time": "2026-01-05T10:00:00+01:00", "status": "in_transit"}
    posted = any_client.post(
        f"/api/v1/shipments/{number}/events", json=late, headers=bearer(any_shop_key)
    )
    assert posted.status_code == 201, posted.text
    _merchant_view(any_client, any_shop_key, number)
    give(any_vault, subject, "notify_sms")
    someone_else = Canaries()
    other = _ship(any_client, any_shop_key, someone_else)
    _merchant_view(any_client, any_shop_key, other)

    erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")
    while ledger_log.sequence(any_vault.engine, now=any_vault.clock()):
        pass

    bodies = _bodies_by_kind(any_vault)
    assert len(bodies["consent"]) == 2
    assert bodies["consent"] == [None, None]
    events_about = [orjson.loads(b) for b in bodies["event"] if b is not None]
    assert events_about
    assert {e["tracking_number"] for e in events_about} == {other}
    with any_vault.engine.connect() as connection:
        of_erased = connection.execute(
            select(func.count())
            .select_from(events.join(shipments, shipments.c.id == events.c.shipment_id))
            .where(shipments.c.tracking_number == number)
        ).scalar_one()
        looks = connection.execute(
            select(func.count())
            .select_from(
                access_records.join(shipments, shipments.c.id == access_records.c.shipment_id)
            )
            .where(shipments.c.tracking_number == number)
        ).scalar_one()
    assert of_erased >= 1
    assert bodies["event"].count(None) == of_erased
    access_about = [orjson.loads(b) for b in bodies["access"] if b is not None]
    assert access_about
    assert {a["subject"] for a in access_about} == {_subject(any_vault, someone_else)}
    assert looks >= 2
    assert bodies["access"].count(None) == looks
    assert [b is not None for b in bodies["erasure"]] == [True]
    with any_vault.engine.connect() as connection:
        erased_at = connection.execute(
            select(ledger_entries.c.erased_at).where(ledger_entries.c.body.is_(None))
        ).scalars()
        assert all(at is not None for at in erased_at)


def test_entries_gathered_before_an_erasure_was_cleaned_up_are_placed_without_bodies(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    number = _ship(any_client, any_shop_key, canaries)
    _merchant_view(any_client, any_shop_key, number)
    ahead = ledger_log.plan(any_vault.engine)  # gathered while the subject was known
    assert ahead is not None

    erasure.erase_subject(
        vault=any_vault, subject_id=_subject(any_vault, canaries), requested_by="subject"
    )
    ledger_log.append(any_vault.engine, ahead, now=any_vault.clock())
    while ledger_log.sequence(any_vault.engine, now=any_vault.clock()):
        pass

    bodies = _bodies_by_kind(any_vault)
    assert bodies["event"] == [None]
    assert bodies["access"]
    assert set(bodies["access"]) == {None}
    assert [b is not None for b in bodies["erasure"]] == [True]


def test_the_receipt_names_its_ledger_entry_once_sequenced_and_the_log_still_verifies(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    _ship(any_client, any_shop_key, canaries)
    receipt = erasure.erase_subject(
        vault=any_vault, subject_id=_subject(any_vault, canaries), requested_by="operator"
    )
    ledger_log.sequence(any_vault.engine, now=any_vault.clock())
    details = erasure.receipt_details(vault=any_vault, receipt_id=receipt.id)
    assert details["completed"] is True
    assert isinstance(details["ledger_index"], int)
    with any_vault.engine.connect() as connection:
        body = connection.execute(
            select(ledger_entries.c.body).where(ledger_entries.c.idx == details["ledger_index"])
        ).scalar()
    assert body is not None
    assert receipt.id.encode() in body
    create_signer(any_vault.settings.key_dir)
    signer = load_signer(any_vault.settings.key_dir)
    ledger_log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock())
    report = ledger_audit.audit(any_vault.engine, verifiers=[signer.verifier])
    assert report.ok, report.finding


def test_verifying_a_postcode_after_erasure_says_the_details_were_erased(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    number = _ship(client, shop_key, canaries)
    erasure.erase_subject(vault=vault, subject_id=_subject(vault, canaries), requested_by="x")
    answer = client.post(f"/api/v1/track/{number}/verify", json={"postcode": canaries.postcode})
    assert answer.status_code == 410
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert canaries.found_in(answer.text) == []


def test_the_tracking_page_form_after_erasure_redirects_to_a_page_saying_so(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    number = _ship(client, shop_key, canaries)
    erasure.erase_subject(vault=vault, subject_id=_subject(vault, canaries), requested_by="x")
    posted = client.post(
        f"/t/{number}/verify", data={"postcode": canaries.postcode}, follow_redirects=False
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == f"/t/{number}?verify=failed"
    page = client.get(posted.headers["location"])
    assert page.status_code == 410
    assert "were erased" in page.text
    assert "no-store" in page.headers["cache-control"]
    assert canaries.found_in(page.text) == []


def test_a_legal_hold_blocks_erasure_naming_the_hold_until_it_is_released(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    number = _ship(any_client, any_shop_key, canaries)
    subject = _subject(any_vault, canaries)
    hold = holds.place(vault=any_vault, raw_number=number, case_ref="CLAIM-2041", placed_by="legal")
    with pytest.raises(holds.UnderHold) as refused:
        erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")
    assert "CLAIM-2041" in str(refused.value)
    assert number in str(refused.value)
    assert any_vault.keystore.get_one(subject) is not None
    assert _merchant_view(any_client, any_shop_key, number)["recipient"]["name"] == canaries.name
    holds.release(vault=any_vault, hold_id=hold.id, released_by="legal")
    erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")
    assert _merchant_view(any_client, any_shop_key, number)["erased"] is True


def test_a_hold_placed_by_another_process_during_an_erasure_waits_until_the_erasure_is_done(
    any_client: TestClient,
    any_vault: Vault,
    any_shop_key: str,
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    number = _ship(any_client, any_shop_key, canaries)
    subject = _subject(any_vault, canaries)
    other_process = build(any_vault.settings)  # its own write turn, as `holds place` has
    hold = Meanwhile(
        lambda: holds.place(
            vault=other_process, raw_number=number, case_ref="CLAIM-77", placed_by="legal"
        )
    )
    after_first_call(monkeypatch, erasure, "active_holds_of_subject", hold)
    erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")
    hold.join()
    other_process.engine.dispose()
    assert isinstance(hold.outcome[0], holds.Hold)
    assert hold.still_waiting == [True]


def test_erasing_an_unknown_or_already_erased_subject_is_not_found(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    _ship(client, shop_key, canaries)
    subject = _subject(vault, canaries)
    with pytest.raises(NotFound):
        erasure.erase_subject(vault=vault, subject_id="0" * 64, requested_by="subject")
    erasure.erase_subject(vault=vault, subject_id=subject, requested_by="subject")
    with pytest.raises(NotFound):
        erasure.erase_subject(vault=vault, subject_id=subject, requested_by="subject")


def test_the_same_person_shipping_again_after_erasure_gets_a_new_key_and_old_data_stays_gone(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    old = _ship(client, shop_key, canaries)
    subject = _subject(vault, canaries)
    erasure.erase_subject(vault=vault, subject_id=subject, requested_by="subject")
    new = _ship(client, shop_key, canaries)
    assert _merchant_view(client, shop_key, new)["recipient"]["name"] == canaries.name
    assert _merchant_view(client, shop_key, old)["erased"] is True
    exported = export.export_subject(vault=vault, subject_id=subject, requested_by="subject")
    assert [s["tracking_number"] for s in exported["shipments"]] == [new]


def test_events_arriving_after_erasure_keep_no_personal_proof(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    number = _ship(client, shop_key, canaries, delivered=False)
    erasure.erase_subject(vault=vault, subject_id=_subject(vault, canaries), requested_by="subject")
    late = {
        "event_id": "late-pod",
        "time": "2026-01-06T10:00:00+00:00",
        "status": "delivered",
        "proof": {"received_by": canaries.received_by},
    }
    posted = client.post(f"/api/v1/shipments/{number}/events", json=late, headers=bearer(shop_key))
    assert posted.status_code == 201, posted.text
    view = _merchant_view(client, shop_key, number)
    assert view["status"] == "delivered"
    assert canaries.found_in(str(view)) == []
    with vault.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(sealed_fields)).scalar() == 0


def _backup_sqlite(source: str, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def test_restoring_a_database_backup_from_before_an_erasure_does_not_bring_the_person_back(
    tmp_path: Path, sqlite_url: str, key_dir: Path, canaries: Canaries
) -> None:
    vault = make_vault(sqlite_url, key_dir)
    from parcelvault.entrypoints.api.app import create_app

    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault)) as client:
        number = _ship(client, key, canaries)
    backup = tmp_path / "before-erasure.db"
    _backup_sqlite(_sqlite_path(sqlite_url), backup)
    erasure.erase_subject(vault=vault, subject_id=_subject(vault, canaries), requested_by="x")
    vault.engine.dispose()

    restored_url = f"sqlite:///{backup}"
    restored = make_vault(restored_url, key_dir)
    with TestClient(create_app(vault=restored)) as client:
        view = _merchant_view(client, key, number)
        assert view["erased"] is True
        assert canaries.found_in(str(view)) == []
        verify = client.post(f"/api/v1/track/{number}/verify", json={"postcode": canaries.postcode})
        assert canaries.found_in(verify.text) == []
    report = erasure.reconcile(vault=restored)
    assert report.receipts_recovered == 1
    with restored.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(sealed_fields)).scalar() == 0
        assert connection.execute(select(erasures.c.requested_by)).scalars().all() == ["reconcile"]
        subject_ids = connection.execute(select(access_records.c.subject_id)).scalars().all()
    assert _subject(restored, canaries) not in subject_ids
    assert erasure.reconcile(vault=restored) == erasure.ReconcileReport(0, 0, 0)


def test_restoring_a_key_store_backup_from_before_an_erasure_is_undone_by_reconcile(
    tmp_path: Path, sqlite_url: str, key_dir: Path, canaries: Canaries
) -> None:
    vault = make_vault(sqlite_url, key_dir)
    from parcelvault.entrypoints.api.app import create_app

    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault)) as client:
        _ship(client, key, canaries)
    subject = _subject(vault, canaries)
    keystore_file = Path(_sqlite_path(default_url(key_dir)))
    backup = tmp_path / "keys-before-erasure.db"
    _backup_sqlite(str(keystore_file), backup)
    erasure.erase_subject(vault=vault, subject_id=subject, requested_by="x")
    vault.keystore.engine.dispose()
    _backup_sqlite(str(backup), keystore_file)

    vault.keystore = KeyStore.open(default_url(key_dir))
    assert vault.keystore.get_one(subject) is not None, "the old backup brought the key back"
    report = erasure.reconcile(vault=vault)
    assert report.keys_destroyed_again == 1
    assert vault.keystore.get_one(subject) is None


def test_erasure_and_reconciliation_log_nothing_personal(
    client: TestClient,
    vault: Vault,
    shop_key: str,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _ship(client, shop_key, canaries)
    subject = _subject(vault, canaries)
    with caplog.at_level(logging.DEBUG):
        receipt = erasure.erase_subject(vault=vault, subject_id=subject, requested_by="subject")
        erasure.reconcile(vault=vault)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert receipt.id in logged
    assert canaries.found_in(logged) == []
    assert subject not in logged
