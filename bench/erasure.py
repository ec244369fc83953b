"""Erasure: how long erasing one data subject takes, on SQLite, in a database made by
`parcelvault init`, beside the cheapest durable change of the same two stores.

Seeding (not timed): `SUBJECTS` people with `SHIPMENTS` shipments each, every shipment
delivered with a signed proof (so each has sealed fields, events and ledger entries),
plus `SMALL` people with a single shipment; the ledger is sequenced.

Timed, per person, in random order of big and small:
- **shred**: `erasure.erase_subject(clean_up=False)`: the key is destroyed, the receipt
  written, the shipments' versions advanced, the ledger entry queued. From here on
  nothing of theirs opens anywhere. Goal: <= 50 ms for a person with 1,000 shipments,
  and about the same for one with a single shipment (independent of their data).
- **clean-up**: `erasure.clean_up_erasure`: tombstoning, deleting ciphertexts, digests
  and ledger bodies; proportional to the data, reported without a goal.
Ceiling: one raw sqlite3 transaction on each store (delete one key row in the key
store; insert a receipt row and update one shipment row in the database), committed
the same way the service commits (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from bench.common import Result, init_folder, log, median, service_env
from parcelvault.adapters.wire import EventIn, ShipmentIn
from parcelvault.crypto import keyed_hash
from parcelvault.domain.shipments import NewShipment
from parcelvault.ledger import log as ledger_log
from parcelvault.services import erasure, ingest, tenants
from parcelvault.services.vault import Vault, build
from parcelvault.settings import Settings

SHIPMENTS = 1_000
GOAL_MS = 50.0


def _shipment(email: str, n: int) -> NewShipment:
    return ShipmentIn.model_validate(
        {
            "origin": {"country": "GB", "city": "London", "postcode": "E1 6AN"},
            "destination": {
                "country": "GB",
                "city": "Leeds",
                "postcode": "LS1 4AP",
                "street": [f"{n} Bench Street"],
            },
            "recipient": {"name": f"Bench Person {n}", "email": email},
        }
    ).to_domain()


def _seed(vault: Vault, tenant_id: int, email: str, count: int) -> None:
    now = vault.clock()
    with vault.engine.begin() as connection:
        prepared = ingest.prepare_shipments(
            connection,
            keystore=vault.keystore,
            keyring=vault.keyring,
            policy=vault.policy,
            tenant_id=tenant_id,
            items=[(i, _shipment(email, i)) for i in range(count)],
            now=now,
        )
        ingest.write_shipments(connection, prepared)
        numbers = list(prepared.tracking_numbers.values())
        events = [
            (
                i,
                number,
                EventIn.model_validate(
                    {
                        "event_id": f"pod-{number}",
                        "time": now.isoformat(),
                        "status": "delivered",
                        "proof": {"received_by": "Bench Receiver", "signature": "sig"},
                    }
                ).to_domain(),
            )
            for i, number in enumerate(numbers)
        ]
        prepared_events = ingest.prepare_events(
            connection,
            keystore=vault.keystore,
            keyring=vault.keyring,
            policy=vault.policy,
            tenant_id=tenant_id,
            items=events,
            now=now,
        )
        ingest.write_events(connection, prepared_events)


def _ceiling_ms(database: Path, keystore: Path, samples: int) -> float:
    times = []
    db = sqlite3.connect(database, isolation_level=None)
    keys = sqlite3.connect(keystore, isolation_level=None)
    for connection in (db, keys):
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS bench_receipts (id TEXT PRIMARY KEY, at TEXT)")
    keys.execute("CREATE TABLE IF NOT EXISTS bench_keys (id INTEGER PRIMARY KEY, k BLOB)")
    keys.executemany("INSERT INTO bench_keys (k) VALUES (?)", [(b"x" * 60,)] * samples)
    shipment = db.execute("SELECT id FROM shipments LIMIT 1").fetchone()[0]
    for n in range(samples):
        began = time.perf_counter()
        keys.execute("BEGIN IMMEDIATE")
        keys.execute("DELETE FROM bench_keys WHERE id = ?", (n + 1,))
        keys.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO bench_receipts VALUES (?, ?)", (f"r{n}-{time.time_ns()}", "now"))
        db.execute("UPDATE shipments SET version = version + 1 WHERE id = ?", (shipment,))
        db.execute("COMMIT")
        times.append((time.perf_counter() - began) * 1000)
    db.close()
    keys.close()
    return median(times)


def run(workdir: Path, *, rounds: int, quick: bool) -> list[Result]:
    big_count = 3 if quick else 5
    shipments = 200 if quick else SHIPMENTS
    folder = workdir / "erasure"
    env = service_env(folder)
    init_folder(folder, env)
    settings = Settings(
        database_url=env["PARCELVAULT_DATABASE_URL"], key_dir=Path(env["PARCELVAULT_KEY_DIR"])
    )
    vault = build(settings)
    tenants.create_tenant(vault=vault, name="bench-shop")
    with vault.engine.connect() as connection:
        tenant_id = connection.exec_driver_sql("SELECT id FROM tenants").scalar_one()
    shred_big: list[float] = []
    shred_small: list[float] = []
    cleanup_big: list[float] = []
    ceilings: list[float] = []
    for round_no in range(rounds):
        people = [(f"big{round_no}-{i}@bench.example", shipments) for i in range(big_count)]
        people += [(f"small{round_no}-{i}@bench.example", 1) for i in range(big_count)]
        log(f"  round {round_no + 1}: seeding {len(people)} people")
        for email, count in people:
            _seed(vault, tenant_id, email, count)
        ledger_log.sequence(vault.engine, now=vault.clock())
        random.Random(round_no).shuffle(people)
        for email, count in people:
            subject = keyed_hash.subject_id(vault.keyring.lookup_key, email=email, phone=None)
            assert subject is not None
            began = time.perf_counter()
            receipt = erasure.erase_subject(
                vault=vault, subject_id=subject, requested_by="bench", clean_up=False
            )
            shred_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            erasure.clean_up_erasure(vault=vault, receipt_id=receipt.id)
            clean_ms = (time.perf_counter() - began) * 1000
            if count > 1:
                shred_big.append(shred_ms)
                cleanup_big.append(clean_ms)
            else:
                shred_small.append(shred_ms)
        database = Path(env["PARCELVAULT_DATABASE_URL"].removeprefix("sqlite:///"))
        keystore = Path(env["PARCELVAULT_KEY_DIR"]) / "subject-keys.db"
        ceilings.append(_ceiling_ms(database, keystore, 50))
        log(
            f"    shred {median(shred_big):.1f} ms ({shipments} shipments), "
            f"{median(shred_small):.1f} ms (1 shipment); clean-up {median(cleanup_big):.0f} ms; "
            f"ceiling {ceilings[-1]:.2f} ms"
        )
    vault.engine.dispose()
    raw = "one raw commit on each store"
    return [
        Result.of_rounds(
            f"erase a person with {shipments} shipments (shred)",
            "ms",
            shred_big,
            ceilings,
            raw,
            goal=GOAL_MS,
            higher_is_better=False,
        ),
        Result.of_rounds(
            "erase a person with 1 shipment (shred)",
            "ms",
            shred_small,
            ceilings,
            raw,
            goal=GOAL_MS,
            higher_is_better=False,
        ),
        Result.of_rounds(
            f"erasure clean-up, {shipments} shipments",
            "ms",
            cleanup_big,
            ceilings,
            raw,
            higher_is_better=False,
        ),
    ]
