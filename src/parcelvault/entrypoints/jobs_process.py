"""The background jobs as a process: `parcelvault jobs` runs them until told to stop,
and `parcelvault serve` keeps one running beside its API workers.

Stopping: SIGTERM or SIGINT ends the jobs after their current round (a retention
sweep stops between batches). A jobs process started by `serve` also ends when
`serve` is gone, even if `serve` was killed without a chance to stop it: it watches
its parent's process id. `serve` starts the process again when it exits with an error
while the server still runs; one that exits cleanly (stopped on purpose) stays
stopped, and `serve` says so in its log.

Stuck processes: the jobs process started by `serve` writes a byte to a pipe every
second (its heartbeat) while none of its jobs has been in one round for longer than
that job allows (`Periodic.stall_seconds`). When `serve` hears nothing for
`jobs_heartbeat_timeout_seconds` (a frozen process, or a job stuck on a lock), it kills
the process and starts another, as after a failure."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from types import FrameType

from parcelvault.entrypoints.systemd_notify import SystemdNotifier
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


HEARTBEAT_SECONDS = 1.0
STARTUP_GRACE_SECONDS = 60.0


class Heartbeat:
    """The jobs process's side of the heartbeat pipe (no pipe: nothing to send)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._stuck_logged = False
        if fd is not None:
            os.set_blocking(fd, False)

    def send(self, stuck: list[str]) -> bool:
        """Beat unless a job is stuck (`stuck` names them); whether a beat was sent."""
        if stuck:
            if not self._stuck_logged:
                log.error("background jobs are stuck in one round", extra={"jobs": stuck})
                self._stuck_logged = True
            return False
        self._stuck_logged = False
        if self._fd is None:
            return False
        try:
            os.write(self._fd, b".")
        except (BlockingIOError, BrokenPipeError):
            return False  # the server is not reading, or is gone (the parent check sees that)
        return True


def run_until_stopped(
    vault: Vault, *, reconcile: bool, parent_pid: int | None, heartbeat_fd: int | None = None
) -> None:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    heartbeat = Heartbeat(heartbeat_fd)
    # Only a process systemd started itself talks to systemd; one started by `serve`
    # is watched by `serve` (and systemd would ignore it: it is not the main process).
    systemd = SystemdNotifier.from_environment() if parent_pid is None else SystemdNotifier(None)
    jobs = BackgroundJobs(vault, reconcile=reconcile)
    jobs.start()
    log.info("background jobs started", extra={"count": len(jobs.jobs)})
    systemd.notify("READY=1")
    try:
        while True:
            stuck = jobs.stalled()
            heartbeat.send(stuck)
            if not stuck:
                systemd.notify("WATCHDOG=1")
            if stop.wait(HEARTBEAT_SECONDS):
                break
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("the server that started the background jobs is gone; stopping")
                break
    finally:
        systemd.notify("STOPPING=1")
        jobs.stop()
        systemd.close()
        log.info("background jobs stopped")


class JobsChild:
    """`parcelvault jobs` as a child of this process, started again (after
    `RESTART_DELAY_SECONDS`, doubling while it keeps failing) whenever it exits with an
    error before `stop()`, or after it is killed for being silent on its heartbeat pipe
    for `heartbeat_timeout` seconds (0: never)."""

    def __init__(self, env: dict[str, str] | None = None, heartbeat_timeout: float = 0) -> None:
        self._env = env
        self._heartbeat_timeout = heartbeat_timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._beats: int | None = None
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
            self._watcher.join(RESTART_DELAY_SECONDS + HEARTBEAT_SECONDS + 1)
        with self._lock:
            if self._beats is not None:
                os.close(self._beats)
                self._beats = None

    def _spawn(self) -> None:
        reading, writing = os.pipe()
        command = [
            sys.executable,
            "-m",
            "parcelvault",
            "jobs",
            "--no-reconcile",
            "--parent-pid",
            str(os.getpid()),
            "--heartbeat-fd",
            str(writing),
        ]
        try:
            with self._lock:
                # Our own interpreter and fixed arguments: nothing from outside.
                self._process = subprocess.Popen(command, env=self._env, pass_fds=(writing,))  # noqa: S603
                if self._beats is not None:
                    os.close(self._beats)
                self._beats = reading
        except BaseException:
            os.close(reading)
            raise
        finally:
            os.close(writing)

    def _wait(self, process: subprocess.Popen[bytes], beats: int) -> int:
        """The process's exit code, once it has exited; a process that stays silent on
        its heartbeat pipe for `heartbeat_timeout` seconds (before its first beat, at
        least STARTUP_GRACE_SECONDS: starting may take a while) is killed first."""
        last = time.monotonic()
        heard = False
        listening = True
        while True:
            if listening:
                ready, _, _ = select.select([beats], [], [], HEARTBEAT_SECONDS)
                if ready:
                    if os.read(beats, 4096):
                        last, heard = time.monotonic(), True
                    else:
                        listening = False  # the child closed its end: it is exiting
            else:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(HEARTBEAT_SECONDS)
            code = process.poll()
            if code is not None:
                return code
            silent = time.monotonic() - last
            limit = self._heartbeat_timeout
            if limit and not heard:
                limit = max(limit, STARTUP_GRACE_SECONDS)
            if limit and silent > limit:
                if self._stopping.is_set():
                    return process.wait()  # stop() is ending it
                log.error(
                    "the background jobs process stopped answering; killing it",
                    extra={"silent_seconds": round(silent, 1)},
                )
                process.kill()
                return process.wait()

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                process, beats = self._process, self._beats
            assert process is not None
            assert beats is not None
            started = time.monotonic()
            code = self._wait(process, beats)
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
