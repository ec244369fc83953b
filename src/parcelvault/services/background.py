"""The service's background work: the ledger sequencer (appends and signed
checkpoints) and the retention schedule, plus, on SQLite, the write-ahead log's
checkpoints.

`parcelvault serve` runs them in a process of their own (`parcelvault jobs`), beside
the API workers rather than in them: appending every accepted event to the ledger is
Python work, and in an API process it competes with the requests for the same
interpreter lock. An application built by `create_app(background=True)` runs them in
threads instead, for servers started without `serve`."""

from __future__ import annotations

import logging
import time

from parcelvault.services import erasure
from parcelvault.services.ledger_views import Sequencer
from parcelvault.services.periodic import Periodic
from parcelvault.services.retention import RetentionSchedule
from parcelvault.services.vault import Vault

log = logging.getLogger(__name__)


class WalCheckpointer(Periodic):
    """A PASSIVE checkpoint of a SQLite database every `period` seconds: copies what
    the write-ahead log holds back into the database file, so that the API processes'
    commits seldom have to (their engines checkpoint only past
    `engine.DEFERRED_WAL_CHECKPOINT_PAGES`). PASSIVE never waits for readers or
    writers; what it cannot copy now, the next round copies."""

    name = "wal-checkpoint"
    failure = "write-ahead log checkpoint failed"
    stall_seconds = 300.0

    def __init__(self, vault: Vault, period: float = 1.0) -> None:
        super().__init__(period)
        self.vault = vault

    def tick(self) -> None:
        with self.vault.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            connection.rollback()


class BackgroundJobs:
    """Starts and stops the jobs together. `start()` first reconciles the database
    with the key store (`erasure.reconcile`: a backup restored on either side must not
    bring an erased person back)."""

    def __init__(self, vault: Vault, *, reconcile: bool = True) -> None:
        self.vault = vault
        self.reconcile = reconcile
        self.sequencer = Sequencer(vault)
        interval = vault.settings.retention_interval_seconds
        self.retention = RetentionSchedule(vault, interval) if interval > 0 else None
        self.checkpointer = (
            WalCheckpointer(vault) if vault.engine.dialect.name == "sqlite" else None
        )

    @property
    def jobs(self) -> list[Periodic]:
        return [
            job for job in (self.sequencer, self.retention, self.checkpointer) if job is not None
        ]

    def start(self) -> None:
        if self.reconcile:
            reconcile_quietly(self.vault)
        for job in self.jobs:
            job.start()

    def stop(self) -> None:
        for job in reversed(self.jobs):
            job.stop()

    def stalled(self) -> list[str]:
        """The names of the jobs whose round under way has run too long (see
        `Periodic.stall_seconds`)."""
        now = time.monotonic()
        return [job.name for job in self.jobs if job.stalled(now)]


def reconcile_quietly(vault: Vault) -> None:
    try:
        erasure.reconcile(vault=vault)
    except Exception:
        # Another process of the same deployment may be reconciling at the same time;
        # the next start (or `parcelvault keys reconcile`) finishes the job.
        log.exception("reconciling erasures at start failed")
