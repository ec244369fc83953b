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
from parcelvault.entrypoints.api.ledger_routes import ledger_router
from parcelvault.entrypoints.api.limits import BodyLimit, PublicRateLimit
from parcelvault.entrypoints.api.me_routes import me_router
from parcelvault.entrypoints.api.public_cache import VersionedCache
from parcelvault.entrypoints.api.routes import router
from parcelvault.entrypoints.web import centre_pages, pages, staff_pages
from parcelvault.logging_setup import configure_logging
from parcelvault.services import erasure
from parcelvault.services.ledger_views import Sequencer
from parcelvault.services.retention import RetentionSchedule
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
    """The application. With `background`, its lifespan first reconciles the database
    with the key store (`erasure.reconcile`: a backup restored on either side must not
    bring an erased person back), then runs the ledger sequencer (appends and
    checkpoints, see `ledger_views.Sequencer`) and, unless `retention_interval_seconds`
    is 0, the retention sweep (`retention.RetentionSchedule`), each in a thread of its
    own."""
    settings = settings or (vault.settings if vault else Settings())
    vault = vault or build(settings)
    sequencer = Sequencer(vault) if background else None
    mailer = SmtpSender(settings)
    interval = settings.retention_interval_seconds
    retention = RetentionSchedule(vault, interval) if background and interval > 0 else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if sequencer is not None:
            await asyncio.to_thread(_reconcile, vault)
            sequencer.start()
        if retention is not None:
            retention.start()
        try:
            yield
        finally:
            if retention is not None:
                await asyncio.to_thread(retention.stop)
            if sequencer is not None:
                await asyncio.to_thread(sequencer.stop)
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
    app.state.retention = retention
    public_cache = VersionedCache[tuple[bytes, str]]()
    app.state.public_cache = public_cache
    problems.install(app)
    app.include_router(router)
    app.include_router(courier_router)
    app.include_router(ledger_router)
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


def _reconcile(vault: Vault) -> None:
    try:
        erasure.reconcile(vault=vault)
    except Exception:
        # Another process of the same deployment may be reconciling at the same time;
        # the next start (or `parcelvault keys reconcile`) finishes the job.
        logging.getLogger("parcelvault").exception("reconciling erasures at start failed")


def factory() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level, load_policy(settings))
    app = create_app(settings, background=True)
    # Everything built so far lives as long as the process: move it out of the
    # collector's reach, so full collections stay short and do not stall requests.
    gc.collect()
    gc.freeze()
    return app
