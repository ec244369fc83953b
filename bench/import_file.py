"""Import: `parcelvault import` of a JSON Lines file of about 200,000 events (about
20,000 shipments, each followed by its events) into a fresh SQLite database per
round, timed end to end as an operator runs it, beside the raw sqlite3 ceilings
measured between its rounds."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import ceiling, dataset
from bench.common import (
    PARCELVAULT,
    BenchError,
    Result,
    create_tenant,
    init_folder,
    log,
    median,
    service_env,
)

TARGET_EVENTS = 200_000
TENANT = "bench-import"


def _records(now: datetime) -> tuple[Iterator[dict[str, Any]], str]:
    try:
        from parcelvault.services import demo_data
    except ImportError:
        rows = dataset.lines(seed=5, shipments=TARGET_EVENTS // 10, events_each=10, now=now)
        return rows, "bench/dataset.py (10 events a shipment)"
    return demo_data.generate(seed=5, count=TARGET_EVENTS, now=now), "demo data generator"


def make_file(path: Path) -> tuple[int, int, str]:
    """Whole shipments with their events until TARGET_EVENTS events are written;
    returns (shipments, events, source)."""
    records, source = _records(datetime.now(UTC))
    shipments = events = 0
    with path.open("wb") as handle:
        for record in records:
            if record["type"] == "shipment":
                if events >= TARGET_EVENTS:
                    break
                shipments += 1
            else:
                events += 1
            handle.write(orjson.dumps(record))
            handle.write(b"\n")
    return shipments, events, source


def command(env: dict[str, str], cwd: Path, path: Path) -> tuple[list[str], str]:
    probe = subprocess.run(
        [PARCELVAULT, "import", "--help"], env=env, cwd=cwd, capture_output=True, timeout=60
    )
    if probe.returncode == 0:
        return [PARCELVAULT, "import", str(path), "--tenant", TENANT], "parcelvault import"
    runner = [sys.executable, "-m", "bench.run_import", str(path), TENANT]
    return runner, "importer.import_file (the CLI has no import command yet)"


def _stored_events(folder: Path) -> int:
    connection = sqlite3.connect(folder / "parcelvault.db")
    try:
        (count,) = connection.execute("SELECT count(*) FROM events").fetchone()
    finally:
        connection.close()
    return int(count)


def run(workdir: Path, *, rounds: int, ceiling_rows: list[tuple[Any, ...]]) -> list[Result]:
    path = workdir / "import.jsonl"
    shipments, events, source = make_file(path)
    size_mb = path.stat().st_size / 1e6
    log(f"  file: {shipments:,} shipments, {events:,} events, {size_mb:.0f} MB ({source})")
    figures: list[float] = []
    bare: list[float] = []
    keyed: list[float] = []
    how = ""
    repo = Path(__file__).resolve().parents[1]
    for r in range(rounds):
        folder = workdir / f"import-{r}"
        env = service_env(folder, PYTHONPATH=str(repo))
        init_folder(folder, env)
        create_tenant(folder, env, TENANT)
        args, how = command(env, folder, path)
        started = time.perf_counter()
        done = subprocess.run(args, env=env, cwd=folder, capture_output=True, timeout=900)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"the import failed ({done.returncode}):\n{done.stderr.decode()}")
        stored = _stored_events(folder)
        if stored != events:
            raise BenchError(f"the import stored {stored:,} events of {events:,}")
        shutil.rmtree(folder)
        figures.append(events / elapsed)
        bare.append(ceiling.executemany_rows_per_s(ceiling_rows, workdir))
        keyed.append(ceiling.executemany_rows_per_s(ceiling_rows, workdir, keyed=True))
        log(
            f"  round {r + 1}: {figures[-1]:,.0f} events/s in {elapsed:.1f} s "
            f"(ceiling {bare[-1]:,.0f} rows/s bare, {keyed[-1]:,.0f} rows/s keyed)"
        )
    log(f"  timed: {how}")
    return [
        Result(
            name=f"Import, {events:,} events + {shipments:,} shipments (JSONL)",
            unit="events/s",
            value=median(figures),
            ceiling=median(bare),
            ceiling_name="sqlite3 executemany, bare table",
            goal=50_000,
            rounds=tuple(figures),
            ceiling_rounds=tuple(bare),
        ),
        Result(
            name="sqlite3 executemany with the events table's keys and index",
            unit="rows/s",
            value=median(keyed),
            ceiling=median(bare),
            ceiling_name="sqlite3 executemany, bare table",
            rounds=tuple(keyed),
            ceiling_rounds=tuple(bare),
        ),
    ]
