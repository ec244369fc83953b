"""The jobs process's heartbeat: what makes it stop, so that `serve` restarts it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from parcelvault.entrypoints.jobs_process import Heartbeat
from parcelvault.services.periodic import Periodic


class Blocking(Periodic):
    name = "blocking"
    stall_seconds = 0.2

    def __init__(self) -> None:
        super().__init__(period=0.01)
        self.release = threading.Event()

    def tick(self) -> None:
        self.release.wait(10)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    reading, writing = os.pipe()
    yield reading, writing
    os.close(reading)
    os.close(writing)


def test_a_job_counts_as_stalled_only_while_one_round_runs_longer_than_it_allows() -> None:
    job = Blocking()
    job.start()
    try:
        deadline = time.monotonic() + 5
        while job.busy_since is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.busy_since is not None
        assert not job.stalled(job.busy_since + 0.1)
        assert job.stalled(job.busy_since + 0.3)
    finally:
        job.release.set()
        job.stop()
    assert job.rounds >= 1
    assert job.busy_since is None  # between rounds
    assert not job.stalled(time.monotonic() + 60)


def test_a_job_without_a_stall_limit_never_counts_as_stalled() -> None:
    job = Blocking()
    job.stall_seconds = None
    job.busy_since = time.monotonic() - 3600
    assert not job.stalled(time.monotonic())


def test_the_heartbeat_beats_while_no_job_is_stuck(pipe: tuple[int, int]) -> None:
    reading, writing = pipe
    heartbeat = Heartbeat(writing)
    assert heartbeat.send([])
    assert heartbeat.send([])
    assert os.read(reading, 16) == b".."


def test_the_heartbeat_stops_while_a_job_is_stuck_and_says_so_once(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    reading, writing = pipe
    heartbeat = Heartbeat(writing)
    with caplog.at_level(logging.ERROR, logger="parcelvault.entrypoints.jobs_process"):
        assert not heartbeat.send(["ledger-sequencer"])
        assert not heartbeat.send(["ledger-sequencer"])
    stuck = [r for r in caplog.records if "stuck" in r.getMessage()]
    assert len(stuck) == 1
    assert getattr(stuck[0], "jobs", None) == ["ledger-sequencer"]
    os.set_blocking(reading, False)
    with pytest.raises(BlockingIOError):
        os.read(reading, 16)  # nothing was sent
    assert heartbeat.send([])  # beats again once the job moves on


def test_a_full_pipe_does_not_block_the_jobs_process(pipe: tuple[int, int]) -> None:
    _, writing = pipe
    heartbeat = Heartbeat(writing)
    while heartbeat.send([]):
        pass  # nobody reads: the pipe fills, and a beat is dropped instead of waiting
    assert not heartbeat.send([])
