"""Key rotation: `parcelvault keys rotate --retire` over a key store of 1,000,000 data
keys, as an operator runs it (a subprocess; process start included), in keys per second.

Two ceilings, measured between the rounds on the same keys:

- raw AES-GCM: one process unwrapping and wrapping every key with `cryptography`'s
  AESGCM in a bare loop (what the crypto costs, before any database);
- raw UPDATE: `sqlite3` executemany of the statement rotation runs (`UPDATE data_keys
  SET kek_id=?, wrapped=? WHERE rowid=? AND key_id=?`), in the order it runs it (row
  id), over every key of a copy of the store, 10,000 a transaction, WAL and
  synchronous=NORMAL like the store (what SQLite itself can take).

Rotation does both for every key, and reads the keys too, so in one process it stays
below either ceiling; on two cores it runs in one process (see
`key_rotation.default_workers`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import BenchError, Result, init_folder, log, median, run_cli, service_env
from parcelvault.crypto.keyring import Keyring, Keys
from parcelvault.crypto.keystore import KeyStore, default_url

KEYS = 1_000_000
GOAL = 50_000.0
SEED_BATCH = 20_000
UPDATE_BATCH = 10_000


def _seed(key_dir: Path, count: int) -> None:
    """Fill the key store with `count` data keys wrapped by the current KEK, through the
    store's own table (created by `KeyStore`), in large raw transactions."""
    KeyStore.open(default_url(key_dir)).engine.dispose()
    keyring = Keyring(Keys.load(key_dir))
    header = b"\x02" + keyring.kek_id.to_bytes(2, "big")
    kek = AESGCM(Keys.load(key_dir).kek)
    stamp = datetime(2026, 1, 1, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    connection = sqlite3.connect(key_dir / "subject-keys.db")
    try:
        for start in range(0, count, SEED_BATCH):
            rows = []
            for _ in range(min(SEED_BATCH, count - start)):
                subject = os.urandom(32).hex()
                nonce = os.urandom(12)
                wrapped = header + nonce + kek.encrypt(nonce, os.urandom(32), subject.encode())
                rows.append((subject, os.urandom(16).hex(), keyring.kek_id, wrapped, stamp))
            connection.executemany(
                "INSERT INTO data_keys (subject_id, key_id, kek_id, wrapped, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            connection.commit()
    finally:
        connection.close()


def _load(store: Path) -> list[tuple[str, str, bytes, int]]:
    connection = sqlite3.connect(store)
    try:
        return [
            (row[0], row[1], bytes(row[2]), row[3])
            for row in connection.execute(
                "SELECT subject_id, key_id, wrapped, rowid FROM data_keys ORDER BY rowid"
            )
        ]
    finally:
        connection.close()


def _kek_of(wrapped: bytes) -> int:
    return int.from_bytes(wrapped[1:3], "big")


def crypto_ceiling(key_dir: Path, keys: list[tuple[str, str, bytes, int]]) -> float:
    """Unwrap and wrap every key in one process: AESGCM calls in a bare loop."""
    loaded = Keys.load(key_dir)
    keks = {loaded.kek_id: AESGCM(loaded.kek), **{i: AESGCM(k) for i, k in loaded.older_keks}}
    target = AESGCM(os.urandom(32))
    began = time.perf_counter()
    for subject, _, wrapped, _ in keys:
        associated = subject.encode()
        data_key = keks[_kek_of(wrapped)].decrypt(wrapped[3:15], wrapped[15:], associated)
        nonce = os.urandom(12)
        target.encrypt(nonce, data_key, associated)
    return len(keys) / (time.perf_counter() - began)


def update_ceiling(store: Path, keys: list[tuple[str, str, bytes, int]], workdir: Path) -> float:
    """executemany UPDATE of every row of a copy of the store (same schema and pragmas)."""
    copy = workdir / "update-ceiling.db"
    shutil.copyfile(store, copy)
    replacement = os.urandom(63)
    connection = sqlite3.connect(copy, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        began = time.perf_counter()
        for start in range(0, len(keys), UPDATE_BATCH):
            rows = [
                (9, replacement, rowid, key_id)
                for _, key_id, _, rowid in keys[start : start + UPDATE_BATCH]
            ]
            connection.execute("BEGIN")
            connection.executemany(
                "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE rowid = ? AND key_id = ?",
                rows,
            )
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - began
    finally:
        connection.close()
        copy.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return len(keys) / elapsed


def _rotate(folder: Path, env: dict[str, str], count: int) -> float:
    began = time.perf_counter()
    output = run_cli(["keys", "rotate", "--retire"], env, folder, timeout=1800)
    elapsed = time.perf_counter() - began
    if f"re-wrapped {count} data keys" not in output:
        raise BenchError(f"keys rotate did not re-wrap {count} keys:\n{output}")
    return count / elapsed


def run(workdir: Path, *, rounds: int, quick: bool = False) -> list[Result]:
    count = 100_000 if quick else KEYS
    folder = workdir / "keys-bench"
    env = service_env(folder)
    init_folder(folder, env)
    key_dir = folder / "keys"
    log(f"  seeding {count:,} data keys")
    _seed(key_dir, count)
    store = key_dir / "subject-keys.db"
    rotations: list[float] = []
    crypto: list[float] = []
    updates: list[float] = []
    for number in range(rounds):
        keys = _load(store)
        crypto.append(crypto_ceiling(key_dir, keys))
        rotations.append(_rotate(folder, env, count))
        updates.append(update_ceiling(store, keys, workdir))
        del keys
        log(
            f"  round {number + 1}: rotate {rotations[-1]:,.0f} keys/s; raw AES-GCM "
            f"{crypto[-1]:,.0f} keys/s; raw UPDATE {updates[-1]:,.0f} rows/s"
        )
    value = median(rotations)
    name = f"keys rotate, {count:,} data keys"
    return [
        Result(
            name=name,
            unit="keys/s",
            value=value,
            ceiling=median(crypto),
            ceiling_name="raw AES-GCM unwrap+wrap, one process, bare loop",
            goal=GOAL,
            rounds=tuple(rotations),
            ceiling_rounds=tuple(crypto),
        ),
        Result(
            name=name,
            unit="keys/s",
            value=value,
            ceiling=median(updates),
            ceiling_name="raw sqlite3 executemany UPDATE by row id of the key store, "
            "10,000 a transaction",
            rounds=tuple(rotations),
            ceiling_rounds=tuple(updates),
        ),
    ]
