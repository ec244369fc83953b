"""`parcelvault serve` as an operator runs it: the background jobs in a process of
their own beside the workers (and `parcelvault jobs` running them alone), and a log
of JSON lines from every part."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import shipment_payload
from tests.e2e.server import PARCELVAULT, LiveService, run_cli, running_service, service_env

WAIT = 20.0


def children_of(pid: int) -> list[int]:
    """Children started by any thread of `pid` (Linux lists them per thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended while we looked
    return found


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def jobs_children(server_pid: int) -> list[int]:
    found = []
    for child in children_of(server_pid):
        try:
            if "jobs" in command_line(child):
                found.append(child)
        except FileNotFoundError:
            continue  # exited while we looked
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def ledger_has(base_url: str, index: int) -> bool:
    return httpx.get(f"{base_url}/api/v1/ledger/entries/{index}", timeout=5).status_code == 200


def the_jobs_process(live: LiveService) -> int:
    """The one jobs process `serve` runs, once it has started."""
    eventually(lambda: len(jobs_children(live.server_pid)) == 1, "one jobs process")
    (pid,) = jobs_children(live.server_pid)
    return pid


def post_event(live: LiveService, number: str, event_id: str) -> None:
    time_ = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    live.add_events(number, {"event_id": event_id, "time": time_, "status": "in_transit"})


def a_new_jobs_process(live: LiveService, replaced: int) -> None:
    eventually(
        lambda: [p for p in jobs_children(live.server_pid) if p != replaced and alive(p)] != [],
        "a new jobs process",
    )


def a_scan_reaches_the_ledger(live: LiveService, event_id: str) -> None:
    number = live.create_shipment(shipment_payload())
    post_event(live, number, event_id)
    # entry 0 records the policy in force; the scan event follows it
    eventually(lambda: ledger_has(live.base_url, 1), "the scan event in the ledger")


def test_serve_runs_the_background_jobs_in_one_child_process_that_appends_to_the_ledger(
    tmp_path: Path,
) -> None:
    with running_service(tmp_path / "svc") as live:
        the_jobs_process(live)
        a_scan_reaches_the_ledger(live, "ev-1")
        assert "background jobs started" in live.log_text()


def test_serve_starts_the_jobs_again_when_their_process_dies(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc") as live:
        first = the_jobs_process(live)
        os.kill(first, signal.SIGKILL)
        a_new_jobs_process(live, replaced=first)
        a_scan_reaches_the_ledger(live, "ev-after-restart")
        assert "the background jobs process failed; starting it again" in live.log_text()


def test_serve_kills_and_replaces_a_jobs_process_that_stops_answering(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", PARCELVAULT_JOBS_HEARTBEAT_TIMEOUT_SECONDS="3") as live:
        frozen = the_jobs_process(live)
        eventually(lambda: "background jobs started" in live.log_text(), "the jobs beating")
        time.sleep(4)  # beating: not replaced
        assert jobs_children(live.server_pid) == [frozen]
        os.kill(frozen, signal.SIGSTOP)
        try:
            eventually(lambda: not alive(frozen), "the frozen jobs process killed")
            a_new_jobs_process(live, replaced=frozen)
        finally:
            if alive(frozen):
                os.kill(frozen, signal.SIGKILL)
        a_scan_reaches_the_ledger(live, "ev-after-freeze")
        assert "the background jobs process stopped answering; killing it" in live.log_text()


def test_stopping_serve_stops_its_jobs_process_too(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc") as live:
        jobs_pid = the_jobs_process(live)
        os.kill(live.server_pid, signal.SIGTERM)
        eventually(lambda: not alive(jobs_pid), "the jobs process gone")
        assert "background jobs stopped" in live.log_text()


def test_with_no_jobs_nothing_is_appended_until_parcelvault_jobs_runs(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", serve_args=("--no-jobs",)) as live:
        assert jobs_children(live.server_pid) == []
        number = live.create_shipment(shipment_payload())
        post_event(live, number, "ev-1")
        time.sleep(2.5)  # the sequencer would have run twice by now
        assert not ledger_has(live.base_url, 0)
        log_path = live.folder / "jobs.log"
        with log_path.open("wb") as log:
            jobs = subprocess.Popen(
                [PARCELVAULT, "jobs"], env=live.env, cwd=live.folder, stdout=log, stderr=log
            )
        try:
            eventually(lambda: ledger_has(live.base_url, 1), "the scan event in the ledger")
        finally:
            jobs.send_signal(signal.SIGINT)
            code = jobs.wait(timeout=WAIT)
        assert code == 0
        assert "background jobs stopped" in log_path.read_text()


def test_parcelvault_jobs_stops_when_the_server_that_started_it_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    env = service_env(folder)
    run_cli(["init"], env, folder)
    # This process is the parent, not the process id given: as if serve had died.
    done = subprocess.run(
        [PARCELVAULT, "jobs", "--parent-pid", str(os.getpid() + 10_000_000)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0
    assert "the server that started the background jobs is gone" in done.stderr


def _notify_listener() -> tuple[str, socket.socket]:
    name = f"parcelvault-e2e-{os.getpid()}-{os.urandom(4).hex()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(b"\0" + name.encode())
    listener.settimeout(WAIT)
    return "@" + name, listener


def test_parcelvault_jobs_under_systemd_reports_ready_beats_the_watchdog_and_stopping(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    address, listener = _notify_listener()
    env = {**service_env(folder), "NOTIFY_SOCKET": address}
    run_cli(["init"], env, folder)
    jobs = subprocess.Popen(
        [PARCELVAULT, "jobs"],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        received = [listener.recv(100) for _ in range(3)]
        assert received == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]
        jobs.send_signal(signal.SIGTERM)
        while (message := listener.recv(100)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
        assert jobs.wait(timeout=WAIT) == 0
    finally:
        if jobs.poll() is None:
            jobs.kill()
        listener.close()


def test_the_jobs_process_serve_starts_leaves_systemd_to_serve(tmp_path: Path) -> None:
    address, listener = _notify_listener()
    listener.settimeout(0.1)
    try:
        with running_service(tmp_path / "svc", NOTIFY_SOCKET=address) as live:
            a_scan_reaches_the_ledger(live, "ev-1")  # the jobs process has been beating
            with pytest.raises(TimeoutError):
                listener.recv(100)
    finally:
        listener.close()


def test_parcelvault_jobs_refuses_to_start_before_init(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    done = subprocess.run(
        [PARCELVAULT, "jobs"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 1
    assert "parcelvault init" in done.stderr


def test_every_line_serve_and_its_jobs_write_is_a_json_object(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", serve_args=("--workers", "2")) as live:
        a_scan_reaches_the_ledger(live, "ev-1")
        os.kill(live.server_pid, signal.SIGTERM)
        eventually(lambda: "background jobs stopped" in live.log_text(), "the jobs stopped")
    lines = live.log_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) and "level" in record for record in records)
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "parcelvault.entrypoints.jobs_process"} <= loggers
    assert not any("color_message" in record for record in records)
