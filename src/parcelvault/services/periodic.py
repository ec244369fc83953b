"""A job that runs in a daemon thread of its own, once at start and then every
`period` seconds, until stopped (the ledger sequencer, the retention schedule)."""

from __future__ import annotations

import logging
import threading
import traceback

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses give `name`, `failure` (the log message when a round fails) and
    `tick()`, and may override `setup()`, which runs once before the first round.

    A failed round is logged by exception type and traceback only, never by message:
    messages may quote data. The next round tries again."""

    name = "periodic"
    failure = "periodic job failed"

    def __init__(self, period: float) -> None:
        self.period = period
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
            self.rounds += 1
            self._stop.wait(self.period)
