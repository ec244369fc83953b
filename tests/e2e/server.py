"""The real service in a subprocess, for end-to-end tests.

`running_service(folder)` runs `parcelvault init`, then `parcelvault serve` on a free
port with a SQLite file and a key folder inside `folder`, waits until it answers,
creates a tenant with `parcelvault tenants create` and yields a `LiveService`. The
server's stderr (its whole log) goes to `folder / "server.log"`; the server is
stopped when the block ends, also when it ends with an exception.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
PARCELVAULT = str(BIN / "parcelvault")
START_TIMEOUT = 20.0


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class LiveService:
    base_url: str
    api_key: str
    tenant: str
    log_path: Path
    folder: Path
    server_pid: int
    env: dict[str, str]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def api(self) -> httpx.Client:
        """An HTTP client authenticated as the tenant."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )

    def create_shipment(self, payload: dict[str, Any]) -> str:
        with self.api() as api:
            response = api.post("/api/v1/shipments", json=payload)
        if response.status_code != 201:
            raise ServiceError(f"creating a shipment: {response.status_code} {response.text}")
        number: str = response.json()["tracking_number"]
        return number

    def add_events(self, tracking_number: str, *events: dict[str, Any]) -> None:
        with self.api() as api:
            for event in events:
                response = api.post(f"/api/v1/shipments/{tracking_number}/events", json=event)
                if response.status_code != 201:
                    raise ServiceError(
                        f"adding event {event.get('event_id')}: "
                        f"{response.status_code} {response.text}"
                    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(folder: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any PARCELVAULT_* setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELVAULT_")}
    env.update(
        PARCELVAULT_DATABASE_URL=f"sqlite:///{folder / 'parcelvault.db'}",
        PARCELVAULT_KEY_DIR=str(folder / "keys"),
        PARCELVAULT_PUBLIC_RATE_LIMIT="0",
        PARCELVAULT_LOG_LEVEL="DEBUG",
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [PARCELVAULT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise ServiceError(f"parcelvault {args[0]} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def wait_until_up(base_url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServiceError(
                f"the server exited with {server.returncode}:\n{log_path.read_text()}"
            )
        try:
            if httpx.get(f"{base_url}/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ServiceError(
        f"the server did not answer within {START_TIMEOUT}s:\n{log_path.read_text()}"
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


@contextmanager
def running_service(
    folder: Path,
    tenant: str = "shop-e2e",
    serve_args: tuple[str, ...] = (),
    **env_extra: str,
) -> Iterator[LiveService]:
    folder.mkdir(parents=True, exist_ok=True)
    # The folder is also the working directory, so no stray .env file is read.
    env = service_env(folder, **env_extra)
    run_cli(["init"], env, folder)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [PARCELVAULT, "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        wait_until_up(base_url, server, log_path)
        key = run_cli(["tenants", "create", tenant], env, folder).strip().splitlines()[-1]
        yield LiveService(
            base_url=base_url,
            api_key=key,
            tenant=tenant,
            log_path=log_path,
            folder=folder,
            server_pid=server.pid,
            env=env,
        )
    finally:
        stop(server)
