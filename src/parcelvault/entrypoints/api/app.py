"""The ASGI application. `create_app(settings)` wires everything; nothing happens at
import time. `factory()` is the entry point uvicorn calls in each worker process."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parcelvault import __version__
from parcelvault.adapters.mail import SmtpSender
from parcelvault.entrypoints.api import problems, subject_routes
from parcelvault.entrypoints.api.batch_fast_path import BatchFastPath
from parcelvault.entrypoints.api.courier_routes import courier_router
from parcelvault.entrypoints.api.fast_path import PublicLookupFastPath
from parcelvault.entrypoints.api.health_routes import health_router
from parcelvault.entrypoints.api.ledger_routes import ledger_router
from parcelvault.entrypoints.api.limits import BodyLimit, PublicRateLimit
from parcelvault.entrypoints.api.me_routes import me_router
from parcelvault.entrypoints.api.public_cache import VersionedCache
from parcelvault.entrypoints.api.routes import router
from parcelvault.entrypoints.web import centre_pages, pages, staff_pages
from parcelvault.logging_setup import configure_logging
from parcelvault.services.background import BackgroundJobs
from parcelvault.services.vault import Vault, build, load_policy
from parcelvault.settings import Settings

DESCRIPTION = """
Shipment tracking that shows people everything about their parcel and nobody anything
about them without need. Errors are RFC 9457 `application/problem+json`. Tenant calls
take `Authorization: Bearer <API key>`; public tracking needs none, and the recipient
view needs the cookie that `POST /api/v1/track/{tn}/verify` sets.
"""


def create_app(
    settings: Settings | None = None, *, vault: Vault | None = None, background: bool = False
) -> FastAPI:
    """The application. With `background`, its lifespan runs the background jobs
    (`background.BackgroundJobs`: reconciling erasures first, then the ledger sequencer,
    the retention sweep and SQLite checkpoints) in threads of this process; without,
    they are expected to run in `parcelvault jobs`, as `serve` arranges."""
    settings = settings or (vault.settings if vault else Settings())
    vault = vault or build(settings)
    jobs = BackgroundJobs(vault) if background else None
    mailer = SmtpSender(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if jobs is not None:
            await asyncio.to_thread(jobs.start)
        try:
            yield
        finally:
            if jobs is not None:
                await asyncio.to_thread(jobs.stop)
            await asyncio.to_thread(mailer.close)

    app = FastAPI(
        title="parcelvault",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.vault = vault
    app.state.mailer = mailer
    app.state.retention = jobs.retention if jobs is not None else None
    public_cache = VersionedCache[tuple[bytes, str]]()
    app.state.public_cache = public_cache
    problems.install(app)
    app.include_router(router)
    app.include_router(courier_router)
    app.include_router(ledger_router)
    app.include_router(health_router)
    app.include_router(me_router)
    subject_routes.install(app)
    pages.install(app)
    staff_pages.install(app)
    centre_pages.install(app, mailer)
    app.add_middleware(BatchFastPath, vault=vault)
    app.add_middleware(PublicLookupFastPath, vault=vault, cache=public_cache)
    app.add_middleware(
        PublicRateLimit,
        rate=settings.public_rate_limit,
        trust_forwarded_for=settings.trust_forwarded_for,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    logging.getLogger("parcelvault").debug("application created")
    return app


def factory() -> FastAPI:
    """With `jobs_in_api_process` off (as `serve` sets it for its workers), the
    background jobs run in another process, which also checkpoints SQLite's
    write-ahead log for this one."""
    settings = Settings()
    configure_logging(settings.log_level, load_policy(settings))
    in_process = settings.jobs_in_api_process
    vault = build(settings, checkpoints_elsewhere=not in_process)
    app = create_app(settings, vault=vault, background=in_process)
    # Everything built so far lives as long as the process: move it out of the
    # collector's reach, so full collections stay short and do not stall requests.
    gc.collect()
    gc.freeze()
    return app
