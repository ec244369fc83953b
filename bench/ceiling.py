"""The write ceiling: raw `sqlite3` executemany of rows shaped like parcelvault's
events (same 15 columns, same sizes), WAL, synchronous=NORMAL (the service's
pragmas), 1,000 rows a transaction, into a fresh file.

Two tables: a bare one (no key, no index: what SQLite itself can take) and a keyed
one with the events table's primary key, unique key and index (what that schema
allows, before any Python)."""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

_COLUMNS = """
    shipment_id VARCHAR(32) NOT NULL,
    tenant_id INTEGER NOT NULL,
    event_id VARCHAR(100) NOT NULL,
    occurred_at DATETIME NOT NULL,
    utc_offset_min SMALLINT NOT NULL,
    arrival BIGINT NOT NULL,
    status VARCHAR(24) NOT NULL,
    reason VARCHAR(24),
    description VARCHAR(500),
    loc_country VARCHAR(2),
    loc_region VARCHAR(100),
    loc_city VARCHAR(100),
    loc_facility VARCHAR(64),
    has_proof BOOLEAN NOT NULL,
    ledger_index BIGINT"""
# The events table as the service declares it: an integer key (SQLite's row id), the
# unique idempotency key, the timeline index and the partial index of unsequenced rows.
KEYED_SCHEMA = f"""
CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY,{_COLUMNS},
    UNIQUE (tenant_id, event_id));
CREATE INDEX ix_events_shipment_id_occurred_at ON events (shipment_id, occurred_at);
CREATE INDEX ix_events_unsequenced ON events (id) WHERE ledger_index IS NULL;
"""
BARE_SCHEMA = f"""
CREATE TABLE events (id BIGINT NOT NULL,{_COLUMNS});
"""
INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
BATCH = 1_000


def rows(count: int, seed: int = 7) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    start = datetime(2026, 5, 1, 8, 0)
    out: list[tuple[Any, ...]] = []
    shipment_id = ""
    for n in range(count):
        if n % 10 == 0:
            # time-ordered like the service's: a 12-digit prefix, then random digits
            shipment_id = f"{n // 10:012x}{rng.getrandbits(80):020x}"
        occurred = start + timedelta(minutes=rng.randrange(60 * 24 * 30))
        out.append(
            (
                n + 1,
                shipment_id,
                1,
                f"ev-{n // 10}-{n % 10}",
                occurred.strftime("%Y-%m-%d %H:%M:%S.%f"),
                120,
                1_780_000_000_000_000 + n,
                "in_transit",
                None,
                "Scanned at Leeds hub",
                "GB",
                "West Yorkshire",
                "Leeds",
                f"HUB-{n % 97:03d}",
                0,
                None,
            )
        )
    return out


def executemany_rows_per_s(
    data: list[tuple[Any, ...]], folder: Path | None = None, *, keyed: bool = False
) -> float:
    """Insert `data` into a fresh database file; rows per second of wall time."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="ceiling-") as tmp:
        connection = sqlite3.connect(Path(tmp) / "ceiling.db", isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(KEYED_SCHEMA if keyed else BARE_SCHEMA)
            started = time.perf_counter()
            for offset in range(0, len(data), BATCH):
                connection.execute("BEGIN")
                connection.executemany(INSERT, data[offset : offset + BATCH])
                connection.execute("COMMIT")
            elapsed = time.perf_counter() - started
        finally:
            connection.close()
    return len(data) / elapsed
