"""The background jobs as a process: `parcelvault jobs` runs them until told to stop,
and `parcelvault serve` keeps one running beside its API workers.

Stopping: SIGTERM or SIGINT ends the jobs after their current round (a retention
sweep stops between batches). A jobs process started by `serve` also ends when
`serve` is gone, even if `serve` was killed without a chance to stop it: it watches
its parent's process id. `serve` starts the process again when it exits with an error
while the server still runs; one that exits cleanly (stopped on purpose) stays
stopped, and `serve` says so in its log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from parcelvault.services.background import BackgroundJobs
from parcelvault.services.vault import Vault

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0
"""The wait before starting a failed jobs process again; it doubles with each failure in
a row, up to MAX_RESTART_DELAY_SECONDS, and starts over once a process has run for
STEADY_SECONDS (a process that cannot start does not spin)."""
MAX_RESTART_DELAY_SECONDS = 60.0
STEADY_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def restart_delay(failures_in_a_row: int) -> float:
    doubled = RESTART_DELAY_SECONDS * 2.0 ** (failures_in_a_row - 1)
    return min(doubled, MAX_RESTART_DELAY_SECONDS)


def run_until_stopped(vault: Vault, *, reconcile: bool, parent_pid: int | None) -> None:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    jobs = BackgroundJobs(vault, reconcile=reconcile)
    jobs.start()
    log.info("background jobs started", extra={"count": len(jobs.jobs)})
    try:
        while not stop.wait(1.0):
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("the server that started the background jobs is gone; stopping")
                break
    finally:
        jobs.stop()
        log.info("background jobs stopped")


class JobsChild:
    """`parcelvault jobs` as a child of this process, started again (after
    `RESTART_DELAY_SECONDS`, doubling while it keeps failing) whenever it exits with an
    error before `stop()`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = env
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="jobs-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(RESTART_DELAY_SECONDS + 1)

    def _spawn(self) -> None:
        command = [
            sys.executable,
            "-m",
            "parcelvault",
            "jobs",
            "--no-reconcile",
            "--parent-pid",
            str(os.getpid()),
        ]
        with self._lock:
            # Our own interpreter and fixed arguments: nothing from outside.
            self._process = subprocess.Popen(command, env=self._env)  # noqa: S603

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if code == 0:
                log.warning("the background jobs process stopped; not starting it again")
                return
            failures = 1 if time.monotonic() - started >= STEADY_SECONDS else failures + 1
            delay = restart_delay(failures)
            log.error(
                "the background jobs process failed; starting it again",
                extra={"exit_code": code, "delay_seconds": delay},
            )
            if self._stopping.wait(delay):
                return
            self._spawn()
