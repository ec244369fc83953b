"""Retention: `retention.sweep` over 1,000,000 shipments on SQLite, beside raw sqlite3
doing the same writes, measured in the same run.

1. A database made by `parcelvault init` is seeded with raw sqlite3 executemany (not
   timed): 1,000,000 shipments whose retention was never computed
   (`retention_next_at` NULL, as after an upgrade), one subject each, two events each
   (the final one with a proof of delivery for most delivered parcels) and their
   sealed values (random bytes of ciphertext size: the sweep never opens them). The
   mix, relative to the run's clock: 80 % delivered over 90 days ago (every field
   due), 8 % delivered 30-90 days ago (notes and proof due), 4 % delivered within 30
   days (nothing due), 2 % returned or expired over 90 days ago, 5.9 % still under
   way, 0.1 % delivered long ago but under a legal hold.
2. Each round copies that database twice. On the first copy `retention.sweep` runs as
   `parcelvault retention run` calls it, first with `dry_run` (every decision and every
   read, no write), then for real; shipments examined ÷ wall time. The values it
   removed and those left are checked against the seeding plan.
3. The ceiling, on the second copy: raw sqlite3 performing exactly the writes the plan
   calls for, ids known in advance, 2,000 shipments a transaction, the service's pragmas
   and the sweep's page cache: DELETE of a shipment's whole key range where every value
   it has is due, else DELETE of each due (shipment, record, field) key; UPDATE of every
   examined shipment's `shredded`, its `retention_next_at` only where that changes
   from NULL, and its version where a value went (all executemany). What the writes
   alone cost on this disk.
4. A second sweep right after the first (nothing due but the held shipments, which
   are looked at and reported again) is timed too: what the hourly schedule costs on
   a table of this size when there is nothing to do.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import BenchError, Result, init_folder, log, service_env
from parcelvault.services import retention
from parcelvault.services.vault import build
from parcelvault.settings import Settings

GOAL = 20_000  # shipments/s
BATCH = 2_000
SEED_CHUNK = 50_000
CONTACT = (
    "recipient.name",
    "recipient.email",
    "recipient.phone",
    "destination.street",
    "destination.postcode",
    "origin.postcode",
)
PROOF = ("proof.received_by", "proof.signature", "proof.geo")
NOTES = "destination.notes"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Planned:
    """One seeded shipment and the fields the sweep must remove from it."""

    shipment_id: str
    proof_record: str | None
    fields: tuple[str, ...]  # shipment fields stored
    due: frozenset[str]
    held: bool
    next_at: datetime | None  # when the sweep must look again (None: never)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _kind(rng: random.Random) -> str:
    roll = rng.random()
    for kind, share in (
        ("old", 0.80),
        ("recent", 0.08),
        ("fresh", 0.04),
        ("returned", 0.02),
        ("underway", 0.059),
    ):
        if roll < share:
            return kind
        roll -= share
    return "held"


def _plan(count: int, now: datetime, seed: int = 11) -> Iterator[tuple[Planned, dict[str, Any]]]:
    rng = random.Random(seed)
    base_ms = int((now - timedelta(days=400)).timestamp() * 1000)
    for n in range(count):
        kind = _kind(rng)
        shipment_id = f"{base_ms + n:012x}{rng.getrandbits(80):020x}"
        if kind in ("old", "held", "returned"):
            final_at = now - timedelta(days=rng.uniform(91, 360))
        elif kind == "recent":
            final_at = now - timedelta(days=rng.uniform(31, 89))
        elif kind == "fresh":
            final_at = now - timedelta(days=rng.uniform(0.5, 29))
        else:
            final_at = now - timedelta(days=rng.uniform(0.1, 6))
        status = {"returned": rng.choice(("returned_to_sender", "expired")), "underway": None}.get(
            kind, "delivered"
        )
        fields = CONTACT + ((NOTES,) if rng.random() < 0.3 else ())
        has_proof = status == "delivered" and rng.random() < 0.8
        if kind in ("old", "returned", "held"):
            due = frozenset(fields) | (frozenset(PROOF) if has_proof else frozenset())
        elif kind == "recent":
            due = frozenset(f for f in fields if f == NOTES) | (
                frozenset(PROOF) if has_proof else frozenset()
            )
        else:
            due = frozenset()
        next_at = {
            "recent": final_at + timedelta(days=90),
            "fresh": final_at + timedelta(days=30),
            "underway": now + DAY,
        }.get(kind)
        event_id = f"e{n}"
        proof_record = (
            hashlib.sha256(f"1\x1f{event_id}".encode()).hexdigest()[:32] if has_proof else None
        )
        planned = Planned(shipment_id, proof_record, fields, due, kind == "held", next_at)
        yield (
            planned,
            {
                "status": status or "in_transit",
                "status_at": final_at,
                "created_at": final_at - timedelta(days=3),
                "subject": f"{rng.getrandbits(256):064x}",
                "event_id": event_id,
            },
        )


def seed(db: Path, count: int, now: datetime) -> list[Planned]:
    """Fill the service's schema with raw executemany; returns the plan."""
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-262144")
    stamp = _time(now)
    connection.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES (1, 'bench-shop', ?)", (stamp,)
    )
    plan: list[Planned] = []
    rng = random.Random(5)
    subjects: list[tuple[Any, ...]] = []
    ships: list[tuple[Any, ...]] = []
    evs: list[tuple[Any, ...]] = []
    sealed: list[tuple[Any, ...]] = []

    def flush() -> None:
        connection.executemany(
            "INSERT INTO subjects (id, created_at, key_id) VALUES (?, ?, ?)", subjects
        )
        connection.executemany(
            "INSERT INTO shipments (id, tenant_id, tracking_number, issued, subject_id, "
            "postcode_digest, origin_country, origin_city, dest_country, dest_city, status, "
            "status_at, status_arrival, version, created_at) "
            "VALUES (?, 1, ?, 1, ?, ?, 'GB', 'London', 'GB', 'Leeds', ?, ?, 0, 1, ?)",
            ships,
        )
        connection.executemany(
            "INSERT INTO events (shipment_id, tenant_id, event_id, occurred_at, utc_offset_min, "
            "arrival, status, has_proof) VALUES (?, 1, ?, ?, 0, 0, ?, ?)",
            evs,
        )
        connection.executemany(
            "INSERT INTO sealed_fields (shipment_id, record_id, field, subject_id, value) "
            "VALUES (?, ?, ?, ?, ?)",
            sealed,
        )
        connection.commit()
        for batch in (subjects, ships, evs, sealed):
            batch.clear()

    for n, (planned, row) in enumerate(_plan(count, now)):
        plan.append(planned)
        sid, subject = planned.shipment_id, row["subject"]
        subjects.append((subject, stamp, f"{n:032x}"))
        ships.append(
            (
                sid,
                f"PV{n:010d}",
                subject,
                rng.randbytes(32),
                row["status"],
                _time(row["status_at"]),
                _time(row["created_at"]),
            )
        )
        evs.append((sid, f"t{n}", _time(row["created_at"] + DAY), "in_transit", 0))
        evs.append(
            (
                sid,
                row["event_id"],
                _time(row["status_at"]),
                row["status"],
                int(bool(planned.proof_record)),
            )
        )
        sealed.extend((sid, sid, name, subject, rng.randbytes(44)) for name in planned.fields)
        if planned.proof_record:
            sealed.extend(
                (sid, planned.proof_record, name, subject, rng.randbytes(44)) for name in PROOF
            )
        if len(ships) >= SEED_CHUNK:
            flush()
    flush()
    held = [(p.shipment_id, f"CASE-{i}", "bench", stamp) for i, p in enumerate(plan) if p.held]
    connection.executemany(
        "INSERT INTO legal_holds (shipment_id, case_ref, placed_by, placed_at) VALUES (?, ?, ?, ?)",
        held,
    )
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return plan


def _sealed_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM sealed_fields").fetchone()[0])


def _expected(plan: list[Planned]) -> tuple[int, int]:
    """(values the sweep must remove, values that must be left)."""
    removed = left = 0
    for p in plan:
        stored = len(p.fields) + (len(PROOF) if p.proof_record else 0)
        gone = 0 if p.held else len(p.due)
        removed += gone
        left += stored - gone
    return removed, left


def _writes(plan: list[Planned]) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The statements' parameters the plan calls for, 2,000 shipments at a time: a
    shipment whose every value is due loses its whole key range, one with some due
    loses those (shipment, record, field) keys; every shipment looked at gets its
    outcome, setting `retention_next_at` only where it changes from NULL."""
    for start in range(0, len(plan), BATCH):
        writes: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _STATEMENTS}
        for p in plan[start : start + BATCH]:
            if p.held:
                continue
            stored = set(p.fields) | (set(PROOF) if p.proof_record else set())
            if p.due and p.due == stored:
                writes["whole"].append((p.shipment_id,))
            else:
                writes["partial"].extend(
                    (p.shipment_id, p.proof_record if f in PROOF else p.shipment_id, f)
                    for f in sorted(p.due)
                )
            marker = ",".join(sorted(p.due)) if p.due else ("" if p.next_at is None else None)
            kind = ("bump" if p.due else "mark") + ("_next" if p.next_at else "")
            params = (marker, _time(p.next_at)) if p.next_at else (marker,)
            writes[kind].append((*params, p.shipment_id))
        yield writes


_STATEMENTS = {
    "whole": "DELETE FROM sealed_fields WHERE shipment_id = ?",
    "partial": "DELETE FROM sealed_fields WHERE shipment_id = ? AND record_id = ? AND field = ?",
    "bump": "UPDATE shipments SET shredded = ?, version = version + 1 WHERE id = ?",
    "bump_next": "UPDATE shipments SET shredded = ?, retention_next_at = ?, "
    "version = version + 1 WHERE id = ?",
    "mark": "UPDATE shipments SET shredded = ? WHERE id = ?",
    "mark_next": "UPDATE shipments SET shredded = ?, retention_next_at = ? WHERE id = ?",
}


def ceiling(db: Path, plan: list[Planned]) -> float:
    """Seconds raw sqlite3 takes for the writes the plan calls for."""
    batches = list(_writes(plan))
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA cache_size = {retention.SWEEP_CACHE_KIB}")
    began = time.perf_counter()
    for writes in batches:
        connection.execute("BEGIN")
        for name, params in writes.items():
            if params:
                connection.executemany(_STATEMENTS[name], params)
        connection.execute("COMMIT")
    seconds = time.perf_counter() - began
    connection.close()
    return seconds


def run(workdir: Path, *, rounds: int, quick: bool = False) -> list[Result]:
    count = 100_000 if quick else 1_000_000
    folder = workdir / "retention"
    env = service_env(folder)
    init_folder(folder, env)
    pristine = folder / "seeded.db"
    shutil.copyfile(folder / "parcelvault.db", pristine)
    now = datetime.now(UTC)
    began = time.perf_counter()
    plan = seed(pristine, count, now)
    expect_removed, expect_left = _expected(plan)
    log(
        f"  seeded {count:,} shipments, {expect_removed + expect_left:,} sealed values "
        f"in {time.perf_counter() - began:.0f} s"
    )
    sweep_rates: list[float] = []
    ceiling_rates: list[float] = []
    idle_rates: list[float] = []
    dry_rates: list[float] = []
    for number in range(rounds):
        work = folder / "parcelvault.db"
        raw = folder / "raw.db"
        for target in (work, raw):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(pristine, target)
        settings = Settings(database_url=f"sqlite:///{work}", key_dir=folder / "keys")
        vault = build(settings, clock=lambda: now)
        try:
            dry = retention.sweep(vault, dry_run=True)
            report = retention.sweep(vault)
            idle = retention.sweep(vault)
        finally:
            vault.engine.dispose()
        if report.examined != count:
            raise BenchError(f"the sweep examined {report.examined:,} of {count:,} shipments")
        if report.values_removed != expect_removed or _sealed_count(work) != expect_left:
            raise BenchError(
                f"the sweep removed {report.values_removed:,} values "
                f"(expected {expect_removed:,}); {_sealed_count(work):,} left "
                f"(expected {expect_left:,})"
            )
        held = sum(1 for p in plan if p.held)
        if (dry.examined, dry.values_removed) != (report.examined, report.values_removed):
            raise BenchError("the dry run and the sweep disagree")
        if idle.examined != held or idle.values_removed:
            raise BenchError(f"the second sweep examined {idle.examined:,} shipments")
        raw_seconds = ceiling(raw, plan)
        if _sealed_count(raw) != expect_left:
            raise BenchError("the raw ceiling left a different number of values")
        sweep_rates.append(count / report.seconds)
        ceiling_rates.append(count / raw_seconds)
        idle_rates.append(count / idle.seconds)
        dry_rates.append(count / dry.seconds)
        log(
            f"  round {number + 1}: sweep {count / report.seconds:,.0f} shipments/s "
            f"({report.seconds:.1f} s, {report.values_removed:,} values removed, "
            f"{len(report.held):,} held); raw sqlite3 {count / raw_seconds:,.0f} shipments/s "
            f"({raw_seconds:.1f} s); dry run {dry.seconds:.1f} s; idle sweep {idle.seconds:.2f} s"
        )
    for leftover in folder.glob("*.db*"):
        leftover.unlink()
    size = "1M" if count == 1_000_000 else f"{count:,}"
    raw_name = (
        "sqlite3 executemany: the same DELETEs and UPDATEs, ids known in advance, "
        f"{BATCH:,} shipments a transaction"
    )
    sweep_name = f"Retention sweep, {size} shipments never looked at, {expect_removed:,} values"
    return [
        Result.of_rounds(
            sweep_name, "shipments/s", sweep_rates, ceiling_rates, raw_name, goal=GOAL
        ),
        Result.of_rounds(
            f"Retention decisions only (--dry-run), {size} shipments",
            "shipments/s",
            dry_rates,
            ceiling_rates,
            raw_name,
        ),
        Result.of_rounds(
            f"Retention sweep with nothing due, over {size} shipments",
            "shipments/s",
            idle_rates,
            ceiling_rates,
            raw_name,
        ),
    ]
