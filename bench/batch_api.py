"""Batch API: events/s through `POST /api/v1/events/batch` on the real service
(`parcelvault serve` with one worker, then two, SQLite), 1,000 events a request from a
few concurrent clients, beside the raw sqlite3 ceiling measured between its rounds."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import ceiling, dataset, seeding
from bench.common import (
    BenchError,
    Result,
    create_tenant,
    free_port,
    init_folder,
    log,
    median,
    running,
    serve_command,
    service_env,
)

SHIPMENTS = 2_000
BATCH = 1_000
CLIENTS = 4
TENANT = "bench-batch"


def _bodies(numbers: list[str], *, tag: str, batches: int, start: datetime) -> list[bytes]:
    bodies = []
    for b in range(batches):
        events: list[dict[str, Any]] = []
        for i in range(BATCH):
            n = b * BATCH + i
            city = dataset.CITIES[n % len(dataset.CITIES)]
            events.append(
                {
                    "tracking_number": numbers[n % len(numbers)],
                    "event_id": f"{tag}-{b}-{i}",
                    "time": (start + timedelta(seconds=n)).isoformat(),
                    "status": "in_transit",
                    "description": f"Scanned at {city[2]} hub",
                    "location": {
                        "country": city[0],
                        "region": city[1],
                        "city": city[2],
                        "facility": f"HUB-{n % 97:03d}",
                    },
                }
            )
        bodies.append(orjson.dumps({"events": events}))
    return bodies


def _post_all(base_url: str, api_key: str, bodies: list[bytes]) -> float:
    """Post every body (CLIENTS at a time); seconds of wall time. Every batch must be
    accepted whole."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def worker(part: list[bytes]) -> int:
        accepted = 0
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
            for body in part:
                response = client.post("/api/v1/events/batch", content=body)
                if response.status_code != 200:
                    raise BenchError(f"batch refused: {response.status_code} {response.text[:500]}")
                accepted += int(response.json()["accepted"])
        return accepted

    parts = [bodies[i::CLIENTS] for i in range(CLIENTS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        accepted = sum(pool.map(worker, parts))
    elapsed = time.perf_counter() - started
    if accepted != len(bodies) * BATCH:
        raise BenchError(f"{accepted} events accepted of {len(bodies) * BATCH}")
    return elapsed


def run(
    workdir: Path,
    *,
    rounds: int,
    batches: int,
    ceiling_rows: list[tuple[Any, ...]],
    workers: tuple[int, ...] = (1, 2),
) -> list[Result]:
    """One figure per worker count, each on a database of its own (the figure falls as
    the database grows, so each starts from the same 2,000 shipments)."""
    return [
        _run_with(
            workdir / f"batch-{count}",
            count,
            rounds=rounds,
            batches=batches,
            ceiling_rows=ceiling_rows,
        )
        for count in workers
    ]


def _run_with(
    folder: Path,
    workers: int,
    *,
    rounds: int,
    batches: int,
    ceiling_rows: list[tuple[Any, ...]],
) -> Result:
    env = service_env(folder, PARCELVAULT_PUBLIC_RATE_LIMIT="0")
    init_folder(folder, env)
    api_key = create_tenant(folder, env, TENANT)
    now = datetime.now(UTC)
    lines = list(dataset.lines(seed=11, shipments=SHIPMENTS, events_each=0, now=now))
    numbers = [line["tracking_number"] for line in lines]
    figures: list[float] = []
    ceilings: list[float] = []
    command = serve_command(workers, free_port())
    plural = "s" if workers > 1 else ""
    with running(command, env=env, cwd=folder, probe_path="/", name="server") as base_url:
        how = seeding.seed(
            lines, folder=folder, env=env, tenant=TENANT, base_url=base_url, api_key=api_key
        )
        log(f"  {workers} worker{plural}: {SHIPMENTS:,} shipments stored through the {how}")
        start = now - timedelta(days=2)
        _post_all(base_url, api_key, _bodies(numbers, tag="warm", batches=2, start=start))
        for r in range(rounds):
            start += timedelta(hours=2)
            bodies = _bodies(numbers, tag=f"r{r}", batches=batches, start=start)
            elapsed = _post_all(base_url, api_key, bodies)
            figures.append(batches * BATCH / elapsed)
            ceilings.append(ceiling.executemany_rows_per_s(ceiling_rows, folder.parent))
            log(
                f"  round {r + 1}: {figures[-1]:,.0f} events/s (ceiling {ceilings[-1]:,.0f} rows/s)"
            )
    return Result(
        name=f"Batch API, 1,000 events a request, {workers} worker{plural}",
        unit="events/s",
        value=median(figures),
        ceiling=median(ceilings),
        ceiling_name="sqlite3 executemany, bare table",
        goal=20_000,
        rounds=tuple(figures),
        ceiling_rounds=tuple(ceilings),
    )
