"""The lookup ceiling: a bare FastAPI app with one `async def` endpoint that runs ONE
indexed query (a shipment by tracking number joined to its events) on the same
SQLite file the service uses, with raw `sqlite3`, and returns the rows as JSON via
orjson. No validation, no decryption, no disclosure, no middleware.

Served by uvicorn exactly as `parcelvault serve` is served; `BENCH_DB` names the file.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.responses import Response

QUERY = """
SELECT s.tracking_number, s.status, s.status_at, s.promised_date, s.service,
       s.origin_country, s.origin_region, s.origin_city,
       s.dest_country, s.dest_region, s.dest_city,
       e.occurred_at, e.status, e.reason, e.description,
       e.loc_country, e.loc_region, e.loc_city
FROM shipments AS s JOIN events AS e ON e.shipment_id = s.id
WHERE s.tracking_number = ?
ORDER BY e.occurred_at DESC
"""


def _body(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    first = rows[0]
    return {
        "tracking_number": first[0],
        "status": first[1],
        "status_at": first[2],
        "promised_date": first[3],
        "service": first[4],
        "origin": {"country": first[5], "region": first[6], "city": first[7]},
        "destination": {"country": first[8], "region": first[9], "city": first[10]},
        "events": [
            {
                "time": row[11],
                "status": row[12],
                "reason": row[13],
                "description": row[14],
                "location": {"country": row[15], "region": row[16], "city": row[17]},
            }
            for row in rows
        ],
    }


def factory() -> FastAPI:
    connection = sqlite3.connect(
        f"file:{os.environ['BENCH_DB']}?mode=ro", uri=True, check_same_thread=False
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/v1/track/{tracking_number}")
    async def track(tracking_number: str) -> Response:
        rows = connection.execute(QUERY, (tracking_number,)).fetchall()
        if not rows:
            return Response(status_code=404)
        return Response(orjson.dumps(_body(rows)), media_type="application/json")

    @app.get("/")
    async def home() -> Response:
        return Response(b"ok", media_type="text/plain")

    return app
