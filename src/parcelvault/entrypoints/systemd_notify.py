"""systemd's service notifications (the protocol of sd_notify(3)), for `parcelvault jobs`
run as a systemd service of its own.

Under a unit with `Type=notify`, systemd passes the address of a datagram socket in
NOTIFY_SOCKET (a path, or an abstract name written with a leading `@`). The jobs process
sends `READY=1` once its jobs run, `WATCHDOG=1` with every heartbeat while none of its
jobs is stuck (with `WatchdogSec=`, systemd restarts a process that falls silent: the
watch `serve` keeps over the jobs process it starts), and `STOPPING=1` when told to
stop. Without NOTIFY_SOCKET nothing is sent. A failed send is ignored: notifications
must never stop the jobs."""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        self._socket: socket.socket | None = None
        if not address or address[0] not in "/@":
            return
        self._address = b"\0" + address[1:].encode() if address[0] == "@" else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls) -> SystemdNotifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, message: str) -> bool:
        """Send one notification; whether it was sent."""
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
