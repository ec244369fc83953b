"""Tenant views served on the event loop: their access records are group-committed,
written only for the version the view shows, and never make the loop wait for a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from parcelvault.adapters.db.tables import access_records, shipments
from parcelvault.services import access_writer, erasure, tracking
from parcelvault.services.tenants import authenticate
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload
from tests.races import after_each_assembly, subject_of


def _shipment(client: TestClient, key: str) -> str:
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(key))
    assert created.status_code == 201, created.text
    return str(created.json()["tracking_number"])


def _records_of(vault: Vault, shipment_number: str) -> list[Any]:
    with vault.engine.connect() as connection:
        shipment_id = connection.execute(
            select(shipments.c.id).where(shipments.c.tracking_number == shipment_number)
        ).scalar_one()
        return list(
            connection.execute(
                select(access_records).where(access_records.c.shipment_id == shipment_id)
            ).all()
        )


def _view(vault: Vault, key: str, number: str) -> tracking.TrackingView:
    tenant_id = authenticate(vault=vault, key=key).tenant_id
    return asyncio.run(
        tracking.disclosed_view_async(vault=vault, pick=tracking.handled_by(tenant_id, number))
    )


@pytest.fixture
def commits(any_vault: Vault) -> Iterator[list[int]]:
    counted: list[int] = []

    def count(_connection: Any) -> None:
        counted.append(1)

    event.listen(any_vault.engine, "commit", count)
    yield counted
    event.remove(any_vault.engine, "commit", count)


def test_views_requested_together_share_one_commit_and_each_leaves_its_record(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, commits: list[int]
) -> None:
    number = _shipment(any_client, any_shop_key)
    tenant_id = authenticate(vault=any_vault, key=any_shop_key).tenant_id
    before = len(_records_of(any_vault, number))

    async def twenty() -> list[tracking.TrackingView]:
        pick = tracking.handled_by(tenant_id, number)
        return await asyncio.gather(
            *(tracking.disclosed_view_async(vault=any_vault, pick=pick) for _ in range(20))
        )

    commits.clear()
    views = asyncio.run(twenty())
    assert len(commits) == 1
    assert {view.personal["recipient.name"] for view in views} == {"Jane Doe"}
    assert len(_records_of(any_vault, number)) == before + 20


def test_a_subject_erased_between_view_and_record_is_read_again_and_nothing_personal_is_shown(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = _shipment(any_client, any_shop_key)
    subject = subject_of(any_vault, number)
    before = len(_records_of(any_vault, number))

    def erasing_after_the_first(assembled: int) -> None:
        if assembled == 1:
            erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")

    assembled = after_each_assembly(monkeypatch, erasing_after_the_first)
    view = _view(any_vault, any_shop_key, number)
    assert len(assembled) == 2
    assert view.erased
    assert view.personal == {}
    records = _records_of(any_vault, number)
    assert len(records) == before
    assert all(record.subject_id != subject for record in records)


def _hold_this_process_turn(vault: Vault, _url: str) -> Callable[[], None]:
    vault._write_lock.acquire()
    return vault._write_lock.release


def _hold_the_database_from_another_connection(_vault: Vault, url: str) -> Callable[[], None]:
    other = sqlite3.connect(
        url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")

    def release() -> None:
        other.execute("ROLLBACK")
        other.close()

    return release


@pytest.mark.parametrize(
    "patience",
    [access_writer.LOOP_PATIENCE_SECONDS, 0.05],
    ids=["retried on the loop", "then handed to a pool thread"],
)
@pytest.mark.parametrize(
    "hold",
    [_hold_this_process_turn, _hold_the_database_from_another_connection],
    ids=["this process's write turn", "another process's write lock"],
)
def test_while_a_write_lock_is_held_the_record_waits_for_it_off_the_event_loop(
    client: TestClient,
    shop_key: str,
    vault: Vault,
    sqlite_url: str,
    hold: Callable[[Vault, str], Callable[[], None]],
    patience: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access_writer, "LOOP_PATIENCE_SECONDS", patience)
    handed_to_threads: list[bool] = []
    write_in_turn = access_writer.AccessWriter._write_waiting_turn

    def counted(self: access_writer.AccessWriter, waiting: Any) -> list[bool]:
        handed_to_threads.append(True)
        return write_in_turn(self, waiting)

    monkeypatch.setattr(access_writer.AccessWriter, "_write_waiting_turn", counted)
    number = _shipment(client, shop_key)
    tenant_id = authenticate(vault=vault, key=shop_key).tenant_id
    before = len(_records_of(vault, number))
    release = hold(vault, sqlite_url)
    released_at: list[float] = []

    def release_later() -> None:
        time.sleep(0.4)
        released_at.append(time.monotonic())
        release()

    async def view_while_ticking() -> tuple[tracking.TrackingView, float, int]:
        ticks = 0
        stop = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        view = await tracking.disclosed_view_async(
            vault=vault, pick=tracking.handled_by(tenant_id, number)
        )
        returned_at = time.monotonic()
        stop.set()
        await ticker
        return view, returned_at, ticks

    releaser = threading.Thread(target=release_later)
    releaser.start()
    try:
        view, returned_at, ticks = asyncio.run(view_while_ticking())
    finally:
        releaser.join()
    assert view.tier == "merchant"
    assert returned_at >= released_at[0]
    assert ticks >= 15
    assert len(_records_of(vault, number)) == before + 1
    assert bool(handed_to_threads) == (patience < 0.4)


def test_a_request_that_goes_away_before_its_record_is_written_leaves_no_record(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    number = _shipment(any_client, any_shop_key)
    tenant_id = authenticate(vault=any_vault, key=any_shop_key).tenant_id
    before = len(_records_of(any_vault, number))

    async def cancelled_before_the_flush() -> bool:
        view = asyncio.create_task(
            tracking.disclosed_view_async(
                vault=any_vault, pick=tracking.handled_by(tenant_id, number)
            )
        )
        await asyncio.sleep(0)  # the view is assembled and its record waits for the flush
        view.cancel()
        try:
            await view
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancelled_before_the_flush())
    assert len(_records_of(any_vault, number)) == before


def test_a_shipment_that_changes_under_every_attempt_is_read_in_the_write_turn_in_the_end(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = _shipment(any_client, any_shop_key)
    before = len(_records_of(any_vault, number))

    def moving_the_version_outside_the_turn(_assembled: int) -> None:
        # On PostgreSQL there is no turn: the fallback's record is written whatever
        # moves, as the whole view is read in its transaction.
        if not any_vault._write_lock.locked():
            with any_vault.engine.begin() as connection:
                connection.execute(
                    update(shipments)
                    .where(shipments.c.tracking_number == number)
                    .values(version=shipments.c.version + 1)
                )

    assembled = after_each_assembly(monkeypatch, moving_the_version_outside_the_turn)
    view = _view(any_vault, any_shop_key, number)
    assert assembled == ["merchant"] * 4
    assert view.personal["recipient.name"] == "Jane Doe"
    assert len(_records_of(any_vault, number)) == before + 1
