"""The process helper with real children: a tiny Starlette app under uvicorn on an inherited socket, and plain
processes for the signal paths."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core import processes
from core.errors import SentiflowError
from core.processes import FD, ProcessRecord

CHILD_APP = textwrap.dedent(
    """
    import os, sys

    if os.environ.get("CHILD_MODE") == "crash":
        sys.exit("child: the model file is missing")

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def ping(request):
        return JSONResponse({}, status_code=503 if os.environ.get("CHILD_MODE") == "unready" else 200)

    async def info(request):
        return JSONResponse({"pid": os.getpid(), "cwd": os.getcwd(), "marker": os.environ.get("CHILD_MARKER")})

    app = Starlette(routes=[Route("/ping", ping), Route("/info", info)])
    uvicorn.run(app, fd=int(sys.argv[1]), log_level="warning")
    """
)


@pytest.fixture
def child_app(tmp_path: Path) -> Path:
    path = tmp_path / "child_app.py"
    path.write_text(CHILD_APP)
    return path


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def sig_ignored(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    raise AssertionError("no SigIgn line")


@pytest.mark.e2e
def test_start_ready_record_and_graceful_stop(child_app: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    workdir = tmp_path / "work"
    workdir.mkdir()

    record = processes.start(
        [sys.executable, str(child_app), FD], log_path=log, env=env(CHILD_MARKER="m-1"), cwd=workdir, name="child"
    )

    assert record.port and record.url == f"http://127.0.0.1:{record.port}"
    assert processes.alive(record)
    assert os.getsid(record.pid) == record.pid  # its own session and process group
    info = httpx.get(f"{record.url}/info", timeout=5).json()
    assert info == {"pid": record.pid, "cwd": str(workdir), "marker": "m-1"}
    assert log.is_file() and record.log_path == str(log)
    saved = tmp_path / "state" / "child.json"
    record.save(saved)
    assert ProcessRecord.load(saved) == record
    assert processes.resident_bytes(record) > 1 << 20

    assert processes.stop(record, grace_s=10) is True  # uvicorn exits on SIGTERM
    assert not processes.alive(record) and not port_open(record.port)
    assert processes.stop(record) is True  # stopping a stopped process is a no-op


@pytest.mark.e2e
def test_two_children_get_different_free_ports(child_app: Path, tmp_path: Path) -> None:
    records = [processes.start([sys.executable, str(child_app), FD], log_path=tmp_path / f"{i}.log") for i in (1, 2)]
    try:
        assert records[0].port != records[1].port
        assert all(httpx.get(f"{r.url}/ping", timeout=5).status_code == 200 for r in records)
    finally:
        for record in records:
            processes.stop(record, grace_s=5)


@pytest.mark.e2e
def test_a_child_that_exits_while_starting_is_reported_with_its_log(child_app: Path, tmp_path: Path) -> None:
    with pytest.raises(SentiflowError) as caught:
        processes.start(
            [sys.executable, str(child_app), FD], log_path=tmp_path / "crash.log", env=env(CHILD_MODE="crash")
        )
    message = str(caught.value)
    assert "exited while starting (code 1)" in message
    assert "child: the model file is missing" in message and "crash.log" in message


@pytest.mark.e2e
def test_a_child_that_never_gets_ready_is_stopped(child_app: Path, tmp_path: Path) -> None:
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(SentiflowError, match=r"did not answer GET http://127\.0\.0\.1:\d+/ping with 200 within 2 s"):
        processes.start(
            [sys.executable, str(child_app), FD],
            log_path=tmp_path / "unready.log",
            env=env(CHILD_MODE="unready"),
            timeout_s=2,
        )
    leftovers = [p for p in psutil.Process().children() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []


@pytest.mark.e2e
def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SentiflowError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(Address already in use\)"):
            processes.start([sys.executable, "-c", "pass", FD], log_path=tmp_path / "x.log", port=port)


def test_the_fd_placeholder_must_match_listen(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly when listen=True"):
        processes.start(["sleep", "1"], log_path=tmp_path / "x.log")
    with pytest.raises(ValueError, match="exactly when listen=True"):
        processes.start(["x", FD], log_path=tmp_path / "x.log", listen=False)


def test_sigterm_ignored_means_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    stubborn = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '60']); print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    record = processes.start([sys.executable, "-c", stubborn], log_path=log, listen=False, health_path=None)
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    [grandchild] = psutil.Process(record.pid).children()

    started = time.monotonic()
    assert processes.stop(record, grace_s=0.5) is False
    assert time.monotonic() - started < 5
    assert not processes.alive(record)
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    record = processes.start(["sleep", "30"], log_path=tmp_path / "s.log", listen=False, health_path=None)
    try:
        impostor = ProcessRecord(record.pid, record.create_time - 5.0, record.log_path)  # same pid, older process
        assert not processes.alive(impostor)
        assert processes.stop(impostor, grace_s=0.1) is True  # "not running" — and nothing was sent
        assert processes.alive(record)
    finally:
        processes.stop(record, grace_s=2)
    assert not processes.alive(record)


def test_an_exited_child_is_reaped_not_alive(tmp_path: Path) -> None:
    record = processes.start(["sleep", "0.2"], log_path=tmp_path / "s.log", listen=False, health_path=None)
    deadline = time.monotonic() + 5
    while processes.alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.alive(record)
    with pytest.raises(ProcessLookupError):
        os.kill(record.pid, 0)  # reaped: no zombie left in the process table


def test_children_start_with_default_signal_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell's background job inherits SIGINT ignored; the helper's children must not (Prefect stops on it)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        record = processes.start(["sleep", "30"], log_path=tmp_path / "s.log", listen=False, health_path=None)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert not sig_ignored(record.pid, signal.SIGINT)
    finally:
        processes.stop(record, grace_s=2)


def test_record_json_round_trip_and_garbage(tmp_path: Path) -> None:
    record = ProcessRecord(123, 1700000000.25, "/tmp/x.log", 8080, "http://127.0.0.1:8080", ("a", "b"))
    assert ProcessRecord.from_json(record.to_json()) == record
    (tmp_path / "bad.json").write_text('{"pid": "x"}')
    assert ProcessRecord.load(tmp_path / "bad.json") is None
    assert ProcessRecord.load(tmp_path / "missing.json") is None
    assert not processes.alive(ProcessRecord(0, 0.0, ""))


def test_log_tail_reads_the_end(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert processes.log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert processes.log_tail(tmp_path / "missing.log") == ""


def test_the_pid_calls_ops_still_makes(tmp_path: Path) -> None:
    pid = processes.spawn(["sleep", "30"], dict(os.environ), tmp_path / "s.log")
    assert processes.pid_alive(pid)
    assert processes.stop(pid, signal.SIGTERM, 5) is True
    assert not processes.pid_alive(pid)
