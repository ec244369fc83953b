"""What `GET /healthz` reports: whether the database answers, and whether the
background jobs keep up (the age of the oldest entry waiting for the ledger, and of
the latest signed checkpoint). Nothing in it is about a person or a shipment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from parcelvault.adapters.db.tables import access_records, events, ledger_queue
from parcelvault.ledger import log as ledger_log
from parcelvault.services.vault import Vault

_OLDEST_EVENT = (
    select(events.c.arrival).where(events.c.ledger_index.is_(None)).order_by(events.c.id).limit(1)
)
_OLDEST_ACCESS = (
    select(access_records.c.at)
    .where(access_records.c.ledger_index.is_(None))
    .order_by(access_records.c.id)
    .limit(1)
)
_OLDEST_QUEUED = select(ledger_queue.c.created_at).order_by(ledger_queue.c.id).limit(1)


@dataclass(frozen=True)
class Health:
    database: bool
    oldest_waiting_seconds: float | None
    """Age of the oldest entry not yet in the ledger; None when none waits."""
    checkpoint_age_seconds: float | None
    """Age of the latest signed checkpoint; None before the first."""
    lag_limit_seconds: float
    """An entry waiting longer than this (`health_ledger_lag_seconds`) means the
    background jobs are not running or not keeping up: the service answers, but
    reports itself degraded."""

    @property
    def status(self) -> str:
        if not self.database:
            return "unavailable"
        waiting = self.oldest_waiting_seconds
        if waiting is not None and waiting > self.lag_limit_seconds:
            return "degraded"
        return "ok"


def check(vault: Vault) -> Health:
    """Each query reads one row through an index (the partial indexes of rows not yet
    in the ledger), so a load balancer may ask often."""
    now = vault.clock()
    limit = vault.settings.health_ledger_lag_seconds
    try:
        with vault.engine.connect() as connection:
            arrival = connection.execute(_OLDEST_EVENT).scalar()
            stamps = [connection.execute(q).scalar() for q in (_OLDEST_ACCESS, _OLDEST_QUEUED)]
            latest = ledger_log.latest_checkpoint(connection)
    except SQLAlchemyError:
        return Health(
            database=False,
            oldest_waiting_seconds=None,
            checkpoint_age_seconds=None,
            lag_limit_seconds=limit,
        )
    if arrival is not None:
        stamps.append(datetime.fromtimestamp(arrival / 1_000_000, UTC))
    waiting = [stamp for stamp in stamps if stamp is not None]
    return Health(
        database=True,
        oldest_waiting_seconds=_age(now, min(waiting)) if waiting else None,
        checkpoint_age_seconds=_age(now, latest.created_at) if latest is not None else None,
        lag_limit_seconds=limit,
    )


def _age(now: datetime, then: datetime) -> float:
    return round(max(0.0, (now - then).total_seconds()), 3)
