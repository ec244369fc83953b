"""Helpers shared by the benchmarks: medians, the machine description, running the
CLI and servers as subprocesses on 127.0.0.1, and the result records."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
PARCELVAULT = str(BIN / "parcelvault")
HOST = "127.0.0.1"
START_TIMEOUT = 30.0


class BenchError(RuntimeError):
    """A benchmark could not run; the message says why."""


@dataclass(frozen=True)
class Result:
    """One figure beside its ceiling. `higher_is_better` decides how the ratio reads
    and how the goal is checked; `goal` is absolute (`goal_kind == "abs"`) or a ratio
    to the ceiling (`goal_kind == "ratio"`); None means reported without a goal."""

    name: str
    unit: str
    value: float
    ceiling: float
    ceiling_name: str
    goal: float | None = None
    goal_kind: str = "abs"
    higher_is_better: bool = True
    rounds: tuple[float, ...] = ()
    ceiling_rounds: tuple[float, ...] = ()

    @classmethod
    def of_rounds(
        cls,
        name: str,
        unit: str,
        rounds: Sequence[float],
        ceiling_rounds: Sequence[float],
        ceiling_name: str,
        **options: Any,
    ) -> Result:
        """The result whose figure and ceiling are the medians of their rounds."""
        return cls(
            name,
            unit,
            median(rounds),
            median(ceiling_rounds),
            ceiling_name,
            rounds=tuple(rounds),
            ceiling_rounds=tuple(ceiling_rounds),
            **options,
        )

    @property
    def ratio(self) -> float:
        return self.value / self.ceiling if self.ceiling else float("nan")

    @property
    def passed(self) -> bool | None:
        if self.goal is None:
            return None
        measured = self.ratio if self.goal_kind == "ratio" else self.value
        return measured >= self.goal if self.higher_is_better else measured <= self.goal

    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        sign = "≥" if self.higher_is_better else "≤"
        if self.goal_kind == "ratio":
            return f"{sign} {self.goal:g}× ceiling"
        return f"{sign} {fmt(self.goal)} {self.unit}"


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("no rounds were measured")
    return float(statistics.median(values))


def log(message: str) -> None:
    print(message, flush=True)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    wrk = shutil.which("wrk")
    wrk_version = "missing"
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        wrk_version = (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]
    return {
        "nproc": str(os.cpu_count() or "?"),
        "cpu": model,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(folder: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any PARCELVAULT_* setting, plus a SQLite file
    and key folder inside `folder`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELVAULT_")}
    env.update(
        PARCELVAULT_DATABASE_URL=f"sqlite:///{folder / 'parcelvault.db'}",
        PARCELVAULT_KEY_DIR=str(folder / "keys"),
        PARCELVAULT_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        [PARCELVAULT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise BenchError(f"parcelvault {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def init_folder(folder: Path, env: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    run_cli(["init"], env, folder)


def create_tenant(folder: Path, env: dict[str, str], name: str) -> str:
    """The tenant's API key (the last line `tenants create` prints)."""
    return run_cli(["tenants", "create", name], env, folder).strip().splitlines()[-1]


def _wait_until_up(url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"the server exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"the server did not answer within {START_TIMEOUT}s:\n{log_path.read_text()}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


@contextmanager
def running(
    command: list[str], *, env: dict[str, str], cwd: Path, probe_path: str, name: str
) -> Iterator[str]:
    """Run a server command (it must listen on the port in its arguments), wait until
    `probe_path` answers, yield the base URL; stop it (SIGTERM, then SIGKILL) after."""
    port = command[command.index("--port") + 1]
    base_url = f"http://{HOST}:{port}"
    log_path = cwd / f"{name}.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    try:
        _wait_until_up(base_url + probe_path, server, log_path)
        yield base_url
    finally:
        _stop(server)


def serve_command(workers: int, port: int) -> list[str]:
    return [
        PARCELVAULT,
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
