"""Several writers and several sequencers at once, as with many API processes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from parcelvault.adapters.db.tables import access_records, events, ledger_entries
from parcelvault.adapters.wire import ShipmentIn
from parcelvault.domain.shipments import Location, ScanEvent
from parcelvault.domain.statuses import Status
from parcelvault.ledger import log
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.services import operations, tenants
from parcelvault.services.ledger_audit import audit
from parcelvault.services.vault import Vault
from tests.conftest import make_vault, shipment_payload


def test_concurrent_writers_and_sequencers_build_one_sound_log(
    database_url: str, key_dir: Path
) -> None:
    vault: Vault = make_vault(database_url, key_dir)
    create_signer(key_dir)
    signer = load_signer(key_dir)
    tenants.create_tenant(vault=vault, name="shop-a")
    principal = tenants.tenant_principal(vault=vault, name="shop-a")
    numbers = [
        operations.create_shipment(
            vault=vault, principal=principal, shipment=ShipmentIn(**shipment_payload()).to_domain()
        ).tracking_number
        for _ in range(4)
    ]
    start = datetime.now(UTC) - timedelta(hours=2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for batch in range(10):
                items = [
                    (
                        numbers[(worker + i) % len(numbers)],
                        ScanEvent(
                            event_id=f"w{worker}-b{batch}-{i}",
                            time=start + timedelta(seconds=batch * 10 + i),
                            status=Status.IN_TRANSIT,
                            location=Location(country="GB", city="Leeds"),
                        ),
                    )
                    for i in range(20)
                ]
                operations.ingest_events(vault=vault, principal=principal, items=items)
        except BaseException as exc:
            errors.append(exc)

    def sequencer() -> None:
        try:
            while not stop.is_set():
                log.sequence(vault.engine, now=datetime.now(UTC), limit=37)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    sequencers = [threading.Thread(target=sequencer) for _ in range(2)]
    for thread in [*writers, *sequencers]:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in sequencers:
        thread.join(120)
    while log.sequence(vault.engine, now=datetime.now(UTC)):
        pass
    log.checkpoint(vault.engine, signer=signer, now=datetime.now(UTC))

    assert errors == []
    with vault.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(events)).scalar()
        leaves = connection.execute(select(func.count()).select_from(ledger_entries)).scalar()
        accesses = connection.execute(select(func.count()).select_from(access_records)).scalar()
        unplaced = connection.execute(
            select(func.count()).select_from(events).where(events.c.ledger_index.is_(None))
        ).scalar()
    assert stored == 3 * 10 * 20
    assert unplaced == 0
    assert leaves == stored + accesses
    report = audit(vault.engine, verifiers=[signer.verifier])
    assert report.ok, report.finding
    assert report.size == leaves
    vault.engine.dispose()
