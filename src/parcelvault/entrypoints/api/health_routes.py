"""`GET /healthz`, for load balancers, service managers and people on call."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from parcelvault.entrypoints.api import problems
from parcelvault.entrypoints.api.routes import vault_of
from parcelvault.services import health

health_router = APIRouter()

NO_STORE = {"Cache-Control": "no-store"}


@health_router.get(
    "/healthz",
    summary="Whether the service can answer, and whether its background jobs keep up",
    tags=["operations"],
    responses={
        200: {
            "description": '`"status": "ok"`, or `"degraded"` when an entry has waited for '
            "the ledger longer than `lag_limit_seconds` (PARCELVAULT_HEALTH_LEDGER_LAG_SECONDS, "
            "default 60: the background jobs are not running or not keeping up); requests "
            "are still answered"
        },
        503: {"description": "the database does not answer (problem+json)"},
    },
)
async def get_health(request: Request) -> Response:
    found = await run_in_threadpool(health.check, vault_of(request))
    if not found.database:
        return problems.problem(
            503, "unavailable", "Service unavailable", "The database does not answer."
        )
    body: dict[str, Any] = {
        "status": found.status,
        "database": "ok",
        "ledger": {
            "oldest_waiting_seconds": found.oldest_waiting_seconds,
            "latest_checkpoint_age_seconds": found.checkpoint_age_seconds,
            "lag_limit_seconds": found.lag_limit_seconds,
        },
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=NO_STORE)
