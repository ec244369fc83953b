"""Recipient cookies for the recipient-tier lookup: one correct postcode verification
per stored shipment (`POST /api/v1/track/{tn}/verify`), each number verified once.

Verification locks a shipment after a few wrong postcodes, so nothing here guesses or
retries: the first refusal stops the benchmark. Postcodes never appear in its output.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import orjson

from bench.common import BenchError

CLIENTS = 4


def destination_postcodes(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Tracking number -> destination postcode, from the shipment lines of the import
    format (the postcode a recipient proves)."""
    return {
        row["tracking_number"]: row["destination"]["postcode"]
        for row in rows
        if row["type"] == "shipment"
    }


def _cookie_of(response: httpx.Response) -> str:
    """`name=value` of the one cookie a verification sets."""
    cookies = [h.split(";", 1)[0].strip() for h in response.headers.get_list("set-cookie")]
    if len(cookies) != 1 or "=" not in cookies[0]:
        raise BenchError(f"a verification set {len(cookies)} cookies, expected one")
    return cookies[0]


def cookies(base_url: str, postcodes: Mapping[str, str]) -> tuple[dict[str, str], datetime]:
    """Tracking number -> `Cookie:` value after one verification with the right
    postcode, and when the first of those cookies expires."""
    stop = threading.Event()

    def verify(numbers: list[str]) -> tuple[dict[str, str], list[datetime]]:
        found: dict[str, str] = {}
        expiries: list[datetime] = []
        headers = {"Content-Type": "application/json"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            for number in numbers:
                if stop.is_set():
                    break
                body = orjson.dumps({"postcode": postcodes[number]})
                response = client.post(f"/api/v1/track/{number}/verify", content=body)
                client.cookies.clear()
                if response.status_code != 200:
                    stop.set()
                    raise BenchError(
                        f"verifying shipment {number} answered {response.status_code}; "
                        "each number is verified once, never retried"
                    )
                found[number] = _cookie_of(response)
                expiries.append(datetime.fromisoformat(response.json()["expires_at"]))
        return found, expiries

    numbers = list(postcodes)
    parts = [numbers[i::CLIENTS] for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        done = list(pool.map(verify, parts))
    found = {number: cookie for part, _ in done for number, cookie in part.items()}
    expiries = [at for _, part in done for at in part]
    if len(found) != len(numbers) or not expiries:
        raise BenchError(f"{len(found)} of {len(numbers)} shipments verified")
    return found, min(expiries)
