"""Public lookup: `GET /api/v1/track/{tn}` on the real service under wrk (64
connections, a spread of existing numbers with 8 events each, rate limit off),
beside the bare app of bench/bare_app.py served the same way, rounds alternating
between the two. Once with one uvicorn worker, once with two."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import dataset, seeding
from bench.common import (
    HOST,
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
EVENTS_EACH = 8
CONNECTIONS = 64
WRK_THREADS = 2
TENANT = "bench-lookup"
LUA = Path(__file__).with_name("track.lua")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(
            "wrk is not installed; the lookup benchmark needs it as its load generator "
            "(Debian/Ubuntu: apt-get install -y wrk). See docs/benchmarks.md."
        )
    return wrk


def run_wrk(wrk: str, base_url: str, numbers_file: Path, seconds: int) -> WrkRun:
    command = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        base_url,
        "--",
        str(numbers_file),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    errors = {k: int(fields[k]) for k in ("connect", "read", "write", "status", "timeout")}
    if any(errors.values()):
        raise BenchError(f"wrk saw errors against {base_url}: {errors}\n{done.stdout}")
    return WrkRun(
        requests_per_s=int(fields["requests"]) / (int(fields["duration_us"]) / 1e6),
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
    )


def bare_command(workers: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:factory",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-proxy-headers",
    ]


def _check(base_url: str, number: str) -> int:
    response = httpx.get(f"{base_url}/api/v1/track/{number}", timeout=10)
    if response.status_code != 200:
        raise BenchError(f"{base_url} answered {response.status_code} for a stored number")
    return len(response.content)


def run(workdir: Path, *, rounds: int, seconds: int, workers: tuple[int, ...]) -> list[Result]:
    wrk = require_wrk()
    folder = workdir / "lookup"
    env = service_env(folder, PARCELVAULT_PUBLIC_RATE_LIMIT="0")
    init_folder(folder, env)
    api_key = create_tenant(folder, env, TENANT)
    lines = list(
        dataset.lines(
            seed=23, shipments=SHIPMENTS, events_each=EVENTS_EACH, now=datetime.now(UTC), tag="lk"
        )
    )
    numbers = [line["tracking_number"] for line in lines if line["type"] == "shipment"]
    numbers_file = folder / "numbers.txt"
    numbers_file.write_text("\n".join(numbers) + "\n")
    bare_env = {
        **env,
        "BENCH_DB": str(folder / "parcelvault.db"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    }
    seeded = False
    results: list[Result] = []
    for count in workers:
        with ExitStack() as stack:
            pv_url = stack.enter_context(
                running(
                    serve_command(count, free_port()),
                    env=env,
                    cwd=folder,
                    probe_path="/",
                    name=f"server-{count}",
                )
            )
            if not seeded:
                how = seeding.seed(
                    lines, folder=folder, env=env, tenant=TENANT, base_url=pv_url, api_key=api_key
                )
                log(f"  {SHIPMENTS:,} shipments × {EVENTS_EACH} events stored through the {how}")
                seeded = True
            bare_url = stack.enter_context(
                running(
                    bare_command(count, free_port()),
                    env=bare_env,
                    cwd=folder,
                    probe_path="/",
                    name=f"bare-{count}",
                )
            )
            sizes = (_check(pv_url, numbers[0]), _check(bare_url, numbers[0]))
            log(f"  {count} worker(s): response bytes parcelvault {sizes[0]}, bare {sizes[1]}")
            run_wrk(wrk, bare_url, numbers_file, 2)
            run_wrk(wrk, pv_url, numbers_file, 2)
            pv_runs: list[WrkRun] = []
            bare_runs: list[WrkRun] = []
            for r in range(rounds):
                order = [(bare_url, bare_runs), (pv_url, pv_runs)]
                for url, into in order if r % 2 == 0 else order[::-1]:
                    into.append(run_wrk(wrk, url, numbers_file, seconds))
                log(
                    f"  round {r + 1}: parcelvault {pv_runs[-1].requests_per_s:,.0f} req/s "
                    f"p99 {pv_runs[-1].p99_ms:.1f} ms | bare "
                    f"{bare_runs[-1].requests_per_s:,.0f} req/s p99 {bare_runs[-1].p99_ms:.1f} ms"
                )
        results.extend(_results(count, pv_runs, bare_runs))
    return results


def _results(workers: int, pv: list[WrkRun], bare: list[WrkRun]) -> list[Result]:
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rps = [x.requests_per_s for x in pv]
    bare_rps = [x.requests_per_s for x in bare]
    p99 = [x.p99_ms for x in pv]
    bare_p99 = [x.p99_ms for x in bare]
    p50 = [x.p50_ms for x in pv]
    bare_p50 = [x.p50_ms for x in bare]
    ceiling_name = f"bare FastAPI + sqlite3, {label}"
    return [
        Result(
            name=f"Public lookup, {CONNECTIONS} connections, {label}",
            unit="req/s",
            value=median(rps),
            ceiling=median(bare_rps),
            ceiling_name=ceiling_name,
            goal=0.7,
            goal_kind="ratio",
            rounds=tuple(rps),
            ceiling_rounds=tuple(bare_rps),
        ),
        Result(
            name=f"Public lookup p50 latency, {label}",
            unit="ms",
            value=median(p50),
            ceiling=median(bare_p50),
            ceiling_name=ceiling_name,
            higher_is_better=False,
            rounds=tuple(p50),
            ceiling_rounds=tuple(bare_p50),
        ),
        Result(
            name=f"Public lookup p99 latency, {label}",
            unit="ms",
            value=median(p99),
            ceiling=median(bare_p99),
            ceiling_name=ceiling_name,
            goal=30,
            higher_is_better=False,
            rounds=tuple(p99),
            ceiling_rounds=tuple(bare_p99),
        ),
    ]
