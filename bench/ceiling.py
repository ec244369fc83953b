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
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

KEYED_SCHEMA = """
CREATE TABLE events (
    id VARCHAR(32) NOT NULL PRIMARY KEY,
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
    UNIQUE (tenant_id, event_id)
);
CREATE INDEX ix_events_shipment_id_occurred_at ON events (shipment_id, occurred_at);
"""
BARE_SCHEMA = """
CREATE TABLE events (
    id VARCHAR(32) NOT NULL,
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
    has_proof BOOLEAN NOT NULL
);
"""
INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
BATCH = 1_000


def rows(count: int, seed: int = 7) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    start = datetime(2026, 5, 1, 8, 0)
    out: list[tuple[Any, ...]] = []
    shipment_id = ""
    for n in range(count):
        if n % 10 == 0:
            shipment_id = uuid.UUID(int=rng.getrandbits(128)).hex
        occurred = start + timedelta(minutes=rng.randrange(60 * 24 * 30))
        out.append(
            (
                uuid.UUID(int=rng.getrandbits(128)).hex,
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
