"""Putting shipments (and their events) into a benchmark database: through
`parcelvault import` when this build has it, else through the HTTP API."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PARCELVAULT, BenchError, run_cli
from bench.dataset import write_jsonl

CLIENTS = 4


def importer_available(env: dict[str, str], cwd: Path) -> bool:
    done = subprocess.run(
        [PARCELVAULT, "import", "--help"], env=env, cwd=cwd, capture_output=True, timeout=60
    )
    return done.returncode == 0


def import_lines(
    rows: Iterable[dict[str, Any]], *, folder: Path, env: dict[str, str], tenant: str
) -> None:
    path = folder / "seed.jsonl"
    write_jsonl(path, iter(rows))
    run_cli(["import", str(path), "--tenant", tenant], env, folder)


def post_lines(rows: Iterable[dict[str, Any]], *, base_url: str, api_key: str) -> None:
    """Shipments one by one (a few clients at a time), then events 1,000 a batch."""
    shipments: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in rows:
        body = {k: v for k, v in row.items() if k != "type"}
        (shipments if row["type"] == "shipment" else events).append(body)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def post_shipments(part: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            for body in part:
                response = client.post("/api/v1/shipments", content=orjson.dumps(body))
                if response.status_code != 201:
                    raise BenchError(f"creating a shipment: {response.status_code}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        parts = [shipments[i::CLIENTS] for i in range(CLIENTS)]
        list(pool.map(post_shipments, parts))
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        for start in range(0, len(events), 1000):
            batch = orjson.dumps({"events": events[start : start + 1000]})
            response = client.post("/api/v1/events/batch", content=batch)
            if response.status_code != 200:
                raise BenchError(f"posting a seed batch: {response.status_code} {response.text}")


def seed(
    rows: Iterable[dict[str, Any]],
    *,
    folder: Path,
    env: dict[str, str],
    tenant: str,
    base_url: str,
    api_key: str,
) -> str:
    """Store `rows`; returns how ("importer" or "API")."""
    if importer_available(env, folder):
        import_lines(rows, folder=folder, env=env, tenant=tenant)
        return "importer"
    post_lines(rows, base_url=base_url, api_key=api_key)
    return "API"
