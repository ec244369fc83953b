"""Retention on SQLite and PostgreSQL: values go exactly when their period ends, holds
keep them, dry runs and second runs change nothing, views say what was removed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from parcelvault.adapters.db import store
from parcelvault.adapters.db.tables import sealed_fields, shipments
from parcelvault.domain.shipments import (
    Destination,
    NewShipment,
    Origin,
    Proof,
    Recipient,
    ScanEvent,
)
from parcelvault.domain.statuses import Status
from parcelvault.entrypoints.api.app import create_app
from parcelvault.services import holds, operations, retention, tenants, tracking
from parcelvault.services.retention import RECHECK, RetentionSchedule, sweep
from parcelvault.services.tenants import Principal
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, make_vault

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONTACT = {
    "recipient.name",
    "recipient.email",
    "recipient.phone",
    "destination.street",
    "destination.postcode",
    "origin.postcode",
}
PROOF = {"proof.received_by", "proof.signature", "proof.geo"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Parcel:
    number: str
    shipment_id: str


@pytest.fixture
def clock(any_vault: Vault) -> Clock:
    ticking = Clock(T0)
    any_vault.clock = ticking
    return ticking


@pytest.fixture
def shop(any_vault: Vault) -> Principal:
    tenants.create_tenant(vault=any_vault, name="shop-a")
    with any_vault.engine.connect() as connection:
        row = store.tenant_by_name(connection, "shop-a")
    assert row is not None
    return Principal(row.id, "shop-a", frozenset(tenants.SCOPES))


def _ship(vault: Vault, shop: Principal, canaries: Canaries, number: str) -> Parcel:
    shipment = NewShipment(
        origin=Origin(country="GB", city="London", postcode="E1 6AN"),
        destination=Destination(
            country="GB",
            city="Leeds",
            postcode=canaries.postcode,
            street=(canaries.street,),
            notes=f"Notes{number} leave by the shed",
        ),
        recipient=Recipient(name=canaries.name, email=canaries.email, phone=canaries.phone),
        tracking_number=number,
    )
    view = operations.create_shipment(vault=vault, principal=shop, shipment=shipment)
    with vault.engine.connect() as connection:
        row = store.shipment_of_tenant(connection, shop.tenant_id, view.tracking_number)
    assert row is not None
    return Parcel(view.tracking_number, row.id)


def _scan(
    vault: Vault, shop: Principal, parcel: Parcel, status: Status, at: datetime, **kw: Any
) -> None:
    event = ScanEvent(
        event_id=f"{parcel.number}-{status.value}-{at:%Y%m%d%H%M%S}",
        time=at,
        status=status,
        **kw,
    )
    operations.ingest_events(vault=vault, principal=shop, items=[(parcel.number, event)])


def _deliver(vault: Vault, shop: Principal, parcel: Parcel, at: datetime, c: Canaries) -> None:
    proof = Proof(received_by=c.received_by, signature=c.signature, geo=(53.8, -1.55))
    _scan(vault, shop, parcel, Status.DELIVERED, at, proof=proof)


def _fields(vault: Vault, parcel: Parcel) -> set[str]:
    """Names of the sealed values still stored for a shipment and its proofs."""
    with vault.engine.connect() as connection:
        row = store.shipment_by_id(connection, parcel.shipment_id)
        snapshot = tracking.load_snapshot(connection, row, vault.keystore)
    return {sealed.field for sealed in snapshot.sealed}


def _row(vault: Vault, parcel: Parcel) -> Any:
    with vault.engine.connect() as connection:
        return connection.execute(
            select(shipments).where(shipments.c.id == parcel.shipment_id)
        ).one()


def _all_rows(vault: Vault) -> tuple[list[Any], list[Any]]:
    with vault.engine.connect() as connection:
        ships = connection.execute(select(shipments).order_by(shipments.c.id)).all()
        sealed = connection.execute(
            select(sealed_fields).order_by(sealed_fields.c.record_id, sealed_fields.c.field)
        ).all()
    return list(ships), list(sealed)


@pytest.fixture
def delivered(any_vault: Vault, clock: Clock, shop: Principal, canaries: Canaries) -> Parcel:
    parcel = _ship(any_vault, shop, canaries, "RETAIN0001")
    clock.now = T0 + timedelta(days=1)
    _scan(any_vault, shop, parcel, Status.IN_TRANSIT, clock.now)
    clock.now = T0 + timedelta(days=2)
    _deliver(any_vault, shop, parcel, clock.now, canaries)
    return parcel


DELIVERED_AT = T0 + timedelta(days=2)


def test_nothing_is_removed_before_a_period_ends_and_each_field_goes_when_its_own_ends(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    everything = CONTACT | {"destination.notes"} | PROOF
    assert _fields(any_vault, delivered) == everything

    clock.now = DELIVERED_AT + timedelta(days=30) - timedelta(seconds=1)
    report = sweep(any_vault)
    assert report.values_removed == 0
    assert _fields(any_vault, delivered) == everything
    assert _row(any_vault, delivered).retention_next_at == DELIVERED_AT + timedelta(days=30)

    version = _row(any_vault, delivered).version
    clock.now = DELIVERED_AT + timedelta(days=30)
    report = sweep(any_vault)
    assert report.shipments_changed == 1
    assert dict(report.removed) == {name: 1 for name in PROOF | {"destination.notes"}}
    assert _fields(any_vault, delivered) == CONTACT
    row = _row(any_vault, delivered)
    assert set(row.shredded.split(",")) == PROOF | {"destination.notes"}
    assert row.version == version + 1
    assert row.retention_next_at == DELIVERED_AT + timedelta(days=90)

    clock.now = DELIVERED_AT + timedelta(days=90) - timedelta(microseconds=1)
    assert sweep(any_vault).examined == 0
    clock.now = DELIVERED_AT + timedelta(days=90)
    report = sweep(any_vault)
    assert dict(report.removed) == {name: 1 for name in CONTACT}
    assert _fields(any_vault, delivered) == set()
    row = _row(any_vault, delivered)
    assert set(row.shredded.split(",")) == everything
    assert row.retention_next_at is None
    assert report.next_due is None


def test_a_shortened_period_applies_at_the_old_date_unless_every_shipment_is_rechecked(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    from parcelvault.privacy.policy import default_policy_text, load_policy_text

    clock.now = DELIVERED_AT + timedelta(days=31)
    sweep(any_vault)
    assert _fields(any_vault, delivered) == CONTACT  # the 30-day fields went
    assert _row(any_vault, delivered).retention_next_at == DELIVERED_AT + timedelta(days=90)

    shorter = default_policy_text().replace('"90d after delivered"', '"60d after delivered"')
    any_vault.policy = load_policy_text(shorter, "a policy with 60 days instead of 90")
    clock.now = DELIVERED_AT + timedelta(days=61)
    assert sweep(any_vault).examined == 0  # scheduled under the old policy
    assert _fields(any_vault, delivered) == CONTACT

    preview = sweep(any_vault, everything=True, dry_run=True)
    assert dict(preview.removed) == {name: 1 for name in CONTACT}
    assert _fields(any_vault, delivered) == CONTACT

    report = sweep(any_vault, everything=True)
    assert report.examined == 1
    assert dict(report.removed) == {name: 1 for name in CONTACT}
    assert _fields(any_vault, delivered) == set()
    assert _row(any_vault, delivered).retention_next_at is None
    again = sweep(any_vault, everything=True)
    assert again.examined == 1
    assert again.values_removed == 0


def test_a_shipment_under_way_keeps_everything_and_is_looked_at_again_a_day_later(
    any_vault: Vault, clock: Clock, shop: Principal, canaries: Canaries
) -> None:
    parcel = _ship(any_vault, shop, canaries, "UNDERWAY01")
    _scan(any_vault, shop, parcel, Status.IN_TRANSIT, T0)
    clock.now = T0 + timedelta(days=400)
    report = sweep(any_vault)
    assert report.examined == 1
    assert report.values_removed == 0
    assert _row(any_vault, parcel).retention_next_at == clock.now + RECHECK
    assert report.next_due == clock.now + RECHECK
    assert sweep(any_vault).examined == 0


def test_a_returned_parcel_counts_its_periods_from_the_return(
    any_vault: Vault, clock: Clock, shop: Principal, canaries: Canaries
) -> None:
    parcel = _ship(any_vault, shop, canaries, "RETURNED01")
    returned_at = T0 + timedelta(days=5)
    clock.now = T0 + timedelta(hours=1)
    _scan(any_vault, shop, parcel, Status.IN_TRANSIT, clock.now)
    clock.now = returned_at
    _scan(any_vault, shop, parcel, Status.RETURNED_TO_SENDER, returned_at)
    clock.now = returned_at + timedelta(days=30)
    assert dict(sweep(any_vault).removed) == {"destination.notes": 1}
    clock.now = returned_at + timedelta(days=90)
    assert dict(sweep(any_vault).removed) == {name: 1 for name in CONTACT}


def test_a_held_shipment_keeps_its_values_until_the_hold_is_released(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    hold = holds.place(
        vault=any_vault, raw_number=delivered.number, case_ref="CLAIM-2026/17", placed_by="legal"
    )
    clock.now = DELIVERED_AT + timedelta(days=100)
    report = sweep(any_vault)
    assert report.values_removed == 0
    assert [(h.tracking_number, h.case_refs) for h in report.held] == [
        (delivered.number, ("CLAIM-2026/17",))
    ]
    assert len(_fields(any_vault, delivered)) == 10
    assert sweep(any_vault).held, "the held shipment is reported again while the hold lasts"

    holds.release(vault=any_vault, hold_id=hold.id, released_by="legal")
    report = sweep(any_vault)
    assert report.held == []
    assert report.values_removed == 10
    assert _fields(any_vault, delivered) == set()


def test_a_dry_run_writes_nothing_and_reports_what_the_real_run_then_does(
    any_vault: Vault, clock: Clock, delivered: Parcel, shop: Principal, canaries: Canaries
) -> None:
    _ship(any_vault, shop, canaries, "NEWPARCEL1")
    clock.now = DELIVERED_AT + timedelta(days=31)
    before = _all_rows(any_vault)
    dry = sweep(any_vault, dry_run=True)
    assert _all_rows(any_vault) == before
    assert dry.dry_run
    real = sweep(any_vault)
    assert _all_rows(any_vault) != before
    assert (dry.examined, dry.shipments_changed, dry.removed) == (
        real.examined,
        real.shipments_changed,
        real.removed,
    )
    assert dry.next_due == real.next_due == clock.now + RECHECK


def test_a_second_run_finds_nothing_to_do(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    clock.now = DELIVERED_AT + timedelta(days=95)
    first = sweep(any_vault)
    assert first.values_removed == 10
    after_first = _all_rows(any_vault)
    second = sweep(any_vault)
    assert (second.examined, second.values_removed) == (0, 0)
    assert _all_rows(any_vault) == after_first


def test_a_proof_arriving_after_retention_finished_is_removed_by_a_later_sweep(
    any_vault: Vault, clock: Clock, shop: Principal, canaries: Canaries
) -> None:
    parcel = _ship(any_vault, shop, canaries, "LATEPROOF1")
    _scan(any_vault, shop, parcel, Status.DELIVERED, T0)
    clock.now = T0 + timedelta(days=95)
    assert sweep(any_vault).shipments_changed == 1
    assert _row(any_vault, parcel).retention_next_at is None
    late = Proof(received_by=canaries.received_by, signature=canaries.signature)
    _scan(any_vault, shop, parcel, Status.DELIVERED, T0 + timedelta(minutes=5), proof=late)
    assert PROOF & _fields(any_vault, parcel) == {"proof.received_by", "proof.signature"}
    report = sweep(any_vault)
    assert report.removed["proof.received_by"] == 1
    assert _fields(any_vault, parcel) == set()


def test_batches_cover_every_due_shipment_once(
    any_vault: Vault, clock: Clock, shop: Principal, canaries: Canaries
) -> None:
    parcels = [_ship(any_vault, shop, canaries, f"BATCH{n:05d}") for n in range(7)]
    for parcel in parcels:
        _deliver(any_vault, shop, parcel, T0, canaries)
    held = holds.place(
        vault=any_vault, raw_number=parcels[3].number, case_ref="CASE-1", placed_by="legal"
    )
    clock.now = T0 + timedelta(days=91)
    dry = sweep(any_vault, dry_run=True, batch_size=2)
    report = sweep(any_vault, batch_size=2)
    assert report.examined == dry.examined == 7
    assert report.shipments_changed == 6
    assert report.removed["recipient.name"] == 6
    assert [h.tracking_number for h in report.held] == [parcels[3].number]
    holds.release(vault=any_vault, hold_id=held.id, released_by="legal")
    assert sweep(any_vault, batch_size=2).shipments_changed == 1


def test_removed_values_are_gone_from_the_database_and_the_views_say_why(
    any_vault: Vault, clock: Clock, delivered: Parcel, canaries: Canaries
) -> None:
    clock.now = DELIVERED_AT + timedelta(days=31)
    sweep(any_vault)
    view = tracking.merchant_view(
        vault=any_vault, tenant_id=_row(any_vault, delivered).tenant_id, raw_number=delivered.number
    )
    assert view.removed == {
        "destination.notes": "Your delivery notes",
        "proof.received_by": "Who received the parcel",
        "proof.signature": "Signature at delivery",
        "proof.geo": "Where the parcel was handed over (GPS)",
    }
    assert view.personal["recipient.name"] == canaries.name
    assert all(not entry.proof for entry in view.timeline)

    clock.now = DELIVERED_AT + timedelta(days=91)
    sweep(any_vault)
    with any_vault.engine.connect() as connection:
        left = connection.execute(
            select(func.count())
            .select_from(sealed_fields)
            .where(sealed_fields.c.subject_id == _row(any_vault, delivered).subject_id)
        ).scalar_one()
    assert left == 0
    view = tracking.merchant_view(
        vault=any_vault, tenant_id=_row(any_vault, delivered).tenant_id, raw_number=delivered.number
    )
    assert view.personal == {}
    assert "Your e-mail address" in view.removed.values()
    assert not canaries.found_in(repr(view))


def test_the_recipient_api_and_page_show_the_removal_not_an_error(
    any_vault: Vault, clock: Clock, delivered: Parcel, canaries: Canaries
) -> None:
    clock.now = DELIVERED_AT + timedelta(days=91)
    sweep(any_vault)
    with TestClient(create_app(vault=any_vault)) as client:
        verified = client.post(
            f"/api/v1/track/{delivered.number}/verify", json={"postcode": canaries.postcode}
        )
        assert verified.status_code == 200, verified.text
        response = client.get(f"/api/v1/track/{delivered.number}")
        assert response.status_code == 200
        body = response.json()
        assert body["tier"] == "recipient"
        assert body["removed"]["recipient.email"] == "removed after its retention period"
        assert set(body["removed"]) == CONTACT | {"destination.notes"} | PROOF
        assert body["recipient"] == {}
        assert not canaries.found_in(response.content)
        page = client.get(f"/t/{delivered.number}")
        assert page.status_code == 200
        assert "removed after their retention period" in page.text
        assert "Your e-mail address" in page.text
        assert not canaries.found_in(page.text)


def test_the_public_view_before_removal_has_nothing_removed(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    with TestClient(create_app(vault=any_vault)) as client:
        body = client.get(f"/api/v1/track/{delivered.number}").json()
    assert body["removed"] == {}


def test_the_schedule_runs_a_sweep_in_its_own_thread(
    any_vault: Vault, clock: Clock, delivered: Parcel
) -> None:
    clock.now = DELIVERED_AT + timedelta(days=91)
    schedule = RetentionSchedule(any_vault, interval=3600)
    schedule.start()
    try:
        deadline = time.monotonic() + 20
        while schedule.rounds == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        schedule.stop()
    assert schedule.rounds == 1
    assert schedule.last_report is not None
    assert schedule.last_report.values_removed == 10
    assert _fields(any_vault, delivered) == set()


def test_serve_starts_the_schedule_unless_its_interval_is_zero(
    sqlite_url: str, key_dir: Path
) -> None:
    on = make_vault(sqlite_url, key_dir, retention_interval_seconds=600)
    off = make_vault(sqlite_url, key_dir, retention_interval_seconds=0)
    try:
        with TestClient(create_app(vault=on, background=True)) as client:
            schedule = client.app.state.retention  # type: ignore[attr-defined]
            assert isinstance(schedule, RetentionSchedule)
            assert schedule.interval == 600
            deadline = time.monotonic() + 20
            while schedule.rounds == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert schedule.rounds == 1
        assert create_app(vault=off, background=True).state.retention is None
        assert create_app(vault=on).state.retention is None
    finally:
        on.engine.dispose()
        off.engine.dispose()


def test_the_schedule_groups_the_policy_by_period() -> None:
    from parcelvault.privacy.policy import load_default_policy

    schedule = retention.Schedule.of(load_default_policy())
    assert schedule.after_created == ()
    assert [(p.days, sorted(names)) for p, names in schedule.after_delivered] == [
        (30, sorted(PROOF | {"proof.photo", "destination.notes"})),
        (90, sorted(CONTACT)),
    ]


@pytest.mark.parametrize("form", ["sqlite text", "datetime"])
def test_the_decider_ends_a_period_at_its_exact_instant_in_either_stored_form(form: str) -> None:
    from parcelvault.privacy.policy import load_default_policy

    def stored(value: datetime) -> Any:
        if form == "datetime":
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    now = T0 + timedelta(days=200)
    decide = retention.Decider(retention.Schedule.of(load_default_policy()), now, stored)
    created = stored(T0)
    exactly_30 = stored(now - timedelta(days=30))
    due, next_at = decide("delivered", exactly_30, created)
    assert due == PROOF | {"proof.photo", "destination.notes"}
    assert next_at == now + timedelta(days=60)
    just_after = now - timedelta(days=30) + timedelta(microseconds=1)
    due, next_at = decide("returned_to_sender", stored(just_after), created)
    assert due == frozenset()
    assert next_at == just_after + timedelta(days=30)
    due, next_at = decide("delivered", stored(now - timedelta(days=90)), created)
    assert due == CONTACT | PROOF | {"proof.photo", "destination.notes"}
    assert next_at is None
    assert decide("out_for_delivery", stored(now - timedelta(days=500)), created) == (
        frozenset(),
        now + RECHECK,
    )
