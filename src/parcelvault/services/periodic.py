"""A job that runs in a daemon thread of its own, once at start and then every
`period` seconds, until stopped (the ledger sequencer, the retention schedule)."""

from __future__ import annotations

import logging
import threading
import time
import traceback

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses give `name`, `failure` (the log message when a round fails) and
    `tick()`, and may override `setup()`, which runs once before the first round.

    A failed round is logged by exception type and traceback only, never by message:
    messages may quote data. The next round tries again."""

    name = "periodic"
    failure = "periodic job failed"
    stall_seconds: float | None = None
    """The longest one round may take before the job counts as stuck (`stalled`);
    None for a job whose rounds may take as long as their work does."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.rounds = 0
        self.busy_since: float | None = None
        """`time.monotonic()` when the round under way began; None between rounds."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stalled(self, now: float) -> bool:
        """Whether the round under way has run longer than `stall_seconds`."""
        began, limit = self.busy_since, self.stall_seconds
        return began is not None and limit is not None and now - began > limit

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def setup(self) -> None:
        """Runs once in the thread before the first round."""

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self.setup()
        while not self._stop.is_set():
            self.busy_since = time.monotonic()
            try:
                self.tick()
            except Exception as exc:  # keep the schedule whatever one round hit
                log.error(
                    self.failure,
                    extra={
                        "error": type(exc).__name__,
                        "traceback": "".join(traceback.format_tb(exc.__traceback__)),
                    },
                )
            self.busy_since = None
            self.rounds += 1
            self._stop.wait(self.period)
