"""Notifications to systemd go to the socket NOTIFY_SOCKET names, as datagrams; without
one, or when nobody listens, nothing fails."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from parcelvault.entrypoints import jobs_process
from parcelvault.entrypoints.systemd_notify import SystemdNotifier
from parcelvault.services.vault import Vault


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    # A short path of its own: socket paths are limited to 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pv-notify-"))
    path = str(folder / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()
    os.unlink(path)
    folder.rmdir()


def test_a_notification_reaches_the_socket_at_a_path(listener: tuple[str, socket.socket]) -> None:
    path, server = listener
    notifier = SystemdNotifier(path)
    assert notifier.notify("READY=1")
    assert server.recv(100) == b"READY=1"
    notifier.close()


def test_an_abstract_socket_name_is_written_with_an_at_sign() -> None:
    name = f"parcelvault-test-{os.getpid()}-{os.urandom(4).hex()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(5)
    try:
        notifier = SystemdNotifier("@" + name)
        assert notifier.notify("WATCHDOG=1")
        assert server.recv(100) == b"WATCHDOG=1"
        notifier.close()
    finally:
        server.close()


@pytest.mark.parametrize("address", [None, "", "relative/path"])
def test_without_a_usable_address_nothing_is_sent(address: str | None) -> None:
    notifier = SystemdNotifier(address)
    assert not notifier.enabled
    assert not notifier.notify("READY=1")


def test_a_socket_nobody_listens_on_is_ignored(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone"))
    assert notifier.enabled
    assert not notifier.notify("READY=1")
    notifier.close()
    assert not notifier.notify("READY=1")


class _JobsThatGetStuck:
    """Background jobs whose second look finds one stuck; the third asks to stop."""

    def __init__(self, _vault: object, *, reconcile: bool) -> None:
        self.jobs: list[object] = []
        self.looks = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def stalled(self) -> list[str]:
        self.looks += 1
        if self.looks == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return ["sequencer"] if self.looks >= 2 else []


def test_the_watchdog_is_not_fed_while_a_job_is_stuck(
    listener: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, server = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setattr(jobs_process, "BackgroundJobs", _JobsThatGetStuck)
    monkeypatch.setattr(jobs_process, "HEARTBEAT_SECONDS", 0.01)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        jobs_process.run_until_stopped(
            cast(Vault, None), reconcile=False, parent_pid=None, heartbeat_fd=None
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    received = [server.recv(100) for _ in range(3)]
    assert received == [b"READY=1", b"WATCHDOG=1", b"STOPPING=1"]
