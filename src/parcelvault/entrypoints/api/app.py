"""The ASGI application. `create_app(settings)` wires everything; nothing happens at
import time. `factory()` is the entry point uvicorn calls in each worker process."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from parcelvault import __version__
from parcelvault.entrypoints.api import problems
from parcelvault.entrypoints.api.limits import BodyLimit, PublicRateLimit
from parcelvault.entrypoints.api.routes import router
from parcelvault.entrypoints.web import pages
from parcelvault.logging_setup import configure_logging
from parcelvault.services.vault import Vault, build, load_policy
from parcelvault.settings import Settings

DESCRIPTION = """
Shipment tracking that shows people everything about their parcel and nobody anything
about them without need. Errors are RFC 9457 `application/problem+json`. Tenant calls
take `Authorization: Bearer <API key>`; public tracking needs none, and the recipient
view needs the cookie that `POST /api/v1/track/{tn}/verify` sets.
"""


def create_app(settings: Settings | None = None, *, vault: Vault | None = None) -> FastAPI:
    settings = settings or (vault.settings if vault else Settings())
    vault = vault or build(settings)
    app = FastAPI(
        title="parcelvault",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.vault = vault
    problems.install(app)
    app.include_router(router)
    pages.install(app)
    app.add_middleware(
        PublicRateLimit,
        rate=settings.public_rate_limit,
        trust_forwarded_for=settings.trust_forwarded_for,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    logging.getLogger("parcelvault").debug("application created")
    return app


def factory() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level, load_policy(settings))
    return create_app(settings)
