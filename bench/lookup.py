"""Lookups under wrk (64 connections, a spread of 2,000 stored numbers with 8 events
each, rate limit off), each tier beside the bare app of bench/bare_app.py served the
same way and measured in the same rounds, in an order that alternates from round to
round. Once with one uvicorn worker, once with two.

- public: `GET /api/v1/track/{tn}`, no cookie (answered from the public cache).
- recipient: `GET /api/v1/track/{tn}` with that shipment's own verification cookie,
  so every request opens the recipient's personal fields (never cached).
- merchant: `GET /api/v1/shipments/{tn}` with the tenant's API key: the personal
  fields opened and an access record committed before the response (the records of
  reads that arrive together share one commit).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import dataset, recipients, seeding
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

TIERS = ("public", "recipient", "merchant")
SHIPMENTS = 2_000
EVENTS_EACH = 8
CONNECTIONS = 64
WRK_THREADS = 2
TENANT = "bench-lookup"
PUBLIC_LUA = Path(__file__).with_name("track.lua")
PRIVATE_LUA = Path(__file__).with_name("private.lua")
REPO = Path(__file__).resolve().parents[1]
# tier -> (figure name, goal as a ratio to the bare app's requests/s, p99 goal in ms)
FIGURES: dict[str, tuple[str, float | None, float | None]] = {
    "public": ("Public lookup", 0.7, 30),
    "recipient": ("Recipient lookup (verified cookie)", 0.5, None),
    "merchant": ("Merchant lookup (API key + access record)", None, None),
}


@dataclass(frozen=True)
class WrkRun:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Target:
    """What one wrk run sends: a script and its arguments (after `--`)."""

    name: str
    script: Path
    args: tuple[str, ...]


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(
            "wrk is not installed; the lookup benchmarks need it as their load generator "
            "(Debian/Ubuntu: apt-get install -y wrk). See docs/benchmarks.md."
        )
    return wrk


def run_wrk(wrk: str, base_url: str, target: Target, seconds: int) -> WrkRun:
    command = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(target.script),
        base_url,
        "--",
        *target.args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    kinds = ("connect", "read", "write", "status", "timeout", "wrong")
    errors = {k: int(fields[k]) for k in kinds if k in fields}
    if any(errors.values()):
        raise BenchError(f"wrk saw errors ({target.name}, {base_url}): {errors}\n{done.stdout}")
    return WrkRun(
        requests=int(fields["requests"]),
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


def _check(url: str, headers: dict[str, str] | None = None, tier: str | None = None) -> int:
    """Bytes of the response to one request, which must be a 200 (of `tier`'s view)."""
    response = httpx.get(url, headers=headers, timeout=10)
    if response.status_code != 200:
        raise BenchError(f"{url} answered {response.status_code} for a stored number")
    if tier is not None and response.json().get("tier") != tier:
        raise BenchError(f"{url} did not answer with the {tier} view")
    return len(response.content)


def _write_requests(path: Path, lines: list[tuple[str, str]]) -> Path:
    """A request file for private.lua: PATH, a tab, one header a line."""
    path.write_text("".join(f"{target}\t{header}\n" for target, header in lines))
    return path


def _path_of(tier: str, number: str) -> str:
    return f"/api/v1/shipments/{number}" if tier == "merchant" else f"/api/v1/track/{number}"


@dataclass
class Tiers:
    """What wrk sends for each chosen tier, the headers of one request of each (for
    the check before measuring), and when the first recipient cookie expires."""

    targets: dict[str, Target]
    headers: dict[str, dict[str, str]]
    cookies_expire: datetime | None = None

    def cookies_last(self, seconds: int) -> None:
        """Stop before a recipient run whose cookies would expire while it runs."""
        if self.cookies_expire is None:
            return
        left = (self.cookies_expire - datetime.now(UTC)).total_seconds()
        if left < seconds + 30:
            raise BenchError(
                "the recipient cookies expire before the next run ends; "
                "run fewer rounds or fewer benchmarks at once"
            )


def _tiers(
    tiers: tuple[str, ...],
    *,
    folder: Path,
    numbers_file: Path,
    numbers: list[str],
    pv_url: str,
    postcodes: dict[str, str],
    api_key: str,
) -> Tiers:
    """Request files of the chosen tiers; for the recipient, one verification each."""
    chosen = Tiers({}, {})
    if "public" in tiers:
        chosen.targets["public"] = Target("public", PUBLIC_LUA, (str(numbers_file),))
        chosen.headers["public"] = {}
    if "recipient" in tiers:
        started = time.monotonic()
        cookies, chosen.cookies_expire = recipients.cookies(pv_url, postcodes)
        log(
            f"  {len(cookies):,} recipients verified with their postcode, once each, "
            f"in {time.monotonic() - started:.1f} s"
        )
        requests = [(_path_of("recipient", n), f"Cookie: {cookies[n]}") for n in numbers]
        path = _write_requests(folder / "recipient.txt", requests)
        chosen.targets["recipient"] = Target("recipient", PRIVATE_LUA, (str(path), "recipient"))
        chosen.headers["recipient"] = {"Cookie": cookies[numbers[0]]}
    if "merchant" in tiers:
        bearer = f"Bearer {api_key}"
        requests = [(_path_of("merchant", n), f"Authorization: {bearer}") for n in numbers]
        path = _write_requests(folder / "merchant.txt", requests)
        chosen.targets["merchant"] = Target("merchant", PRIVATE_LUA, (str(path), "merchant"))
        chosen.headers["merchant"] = {"Authorization": bearer}
    return chosen


def run(
    workdir: Path,
    *,
    rounds: int,
    seconds: int,
    workers: tuple[int, ...],
    tiers: tuple[str, ...] = TIERS,
) -> list[Result]:
    wrk = require_wrk()
    tiers = tuple(t for t in TIERS if t in tiers)
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
    chosen: Tiers | None = None
    runs: dict[tuple[str, int], list[WrkRun]] = {}
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
            if chosen is None:
                how = seeding.seed(
                    lines, folder=folder, env=env, tenant=TENANT, base_url=pv_url, api_key=api_key
                )
                log(f"  {SHIPMENTS:,} shipments × {EVENTS_EACH} events stored through the {how}")
                chosen = _tiers(
                    tiers,
                    folder=folder,
                    numbers_file=numbers_file,
                    numbers=numbers,
                    pv_url=pv_url,
                    postcodes=recipients.destination_postcodes(lines),
                    api_key=api_key,
                )
            bare_url = stack.enter_context(
                running(
                    bare_command(count, free_port()),
                    env=bare_env,
                    cwd=folder,
                    probe_path="/",
                    name=f"bare-{count}",
                )
            )
            sizes = {"bare": _check(f"{bare_url}/api/v1/track/{numbers[0]}")}
            for tier in tiers:
                url = pv_url + _path_of(tier, numbers[0])
                sizes[tier] = _check(url, chosen.headers[tier], tier)
            log(
                f"  {count} worker(s): response bytes "
                + ", ".join(f"{name} {size}" for name, size in sizes.items())
            )
            order = [("bare", bare_url, Target("bare", PUBLIC_LUA, (str(numbers_file),)))]
            order += [(tier, pv_url, chosen.targets[tier]) for tier in tiers]
            for name, url, target in order:
                if name == "recipient":
                    chosen.cookies_last(2)
                run_wrk(wrk, url, target, 2)
            for r in range(rounds):
                for name, url, target in order if r % 2 == 0 else order[::-1]:
                    if name == "recipient":
                        chosen.cookies_last(seconds)
                    runs.setdefault((name, count), []).append(run_wrk(wrk, url, target, seconds))
                log(
                    f"  round {r + 1}: "
                    + " | ".join(
                        f"{name} {runs[(name, count)][-1].requests_per_s:,.0f} req/s "
                        f"p99 {runs[(name, count)][-1].p99_ms:.1f} ms"
                        for name, _, _ in order
                    )
                )
    if "merchant" in tiers:
        _check_access_records(folder / "parcelvault.db", runs, workers)
    return [
        result
        for tier in tiers
        for count in workers
        for result in _results(tier, count, runs[(tier, count)], runs[("bare", count)])
    ]


def _check_access_records(
    db: Path, runs: dict[tuple[str, int], list[WrkRun]], workers: tuple[int, ...]
) -> None:
    """Every merchant response that wrk counted must have left its access record (a
    few more exist: the checks, warm-ups and requests still in flight at the end)."""
    connection = sqlite3.connect(db)
    try:
        counts = dict(
            connection.execute("SELECT tier, count(*) FROM access_records GROUP BY tier").fetchall()
        )
    finally:
        connection.close()
    answered = sum(run.requests for count in workers for run in runs[("merchant", count)])
    merchant, recipient = counts.get("merchant", 0), counts.get("recipient", 0)
    if merchant < answered:
        raise BenchError(f"{merchant:,} access records for {answered:,} merchant lookups")
    log(f"  access records written: {merchant:,} merchant, {recipient:,} recipient")


def _results(tier: str, workers: int, pv: list[WrkRun], bare: list[WrkRun]) -> list[Result]:
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    title, goal, p99_goal = FIGURES[tier]
    rps = [x.requests_per_s for x in pv]
    bare_rps = [x.requests_per_s for x in bare]
    p99 = [x.p99_ms for x in pv]
    bare_p99 = [x.p99_ms for x in bare]
    p50 = [x.p50_ms for x in pv]
    bare_p50 = [x.p50_ms for x in bare]
    ceiling_name = f"bare FastAPI + sqlite3, {label}"
    return [
        Result(
            name=f"{title}, {CONNECTIONS} connections, {label}",
            unit="req/s",
            value=median(rps),
            ceiling=median(bare_rps),
            ceiling_name=ceiling_name,
            goal=goal,
            goal_kind="ratio",
            rounds=tuple(rps),
            ceiling_rounds=tuple(bare_rps),
        ),
        Result(
            name=f"{title} p50 latency, {label}",
            unit="ms",
            value=median(p50),
            ceiling=median(bare_p50),
            ceiling_name=ceiling_name,
            higher_is_better=False,
            rounds=tuple(p50),
            ceiling_rounds=tuple(bare_p50),
        ),
        Result(
            name=f"{title} p99 latency, {label}",
            unit="ms",
            value=median(p99),
            ceiling=median(bare_p99),
            ceiling_name=ceiling_name,
            goal=p99_goal,
            higher_is_better=False,
            rounds=tuple(p99),
            ceiling_rounds=tuple(bare_p99),
        ),
    ]
