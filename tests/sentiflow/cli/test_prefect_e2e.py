"""``sentiflow prefect server|worker|status|down`` as a user runs them (subprocesses, own home and port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core import processes
from core.config import Settings
from sentiflow.ops.server import read_server
from sentiflow.ops.worker import read_worker
from tests.fixtures.prefect_helpers import free_port, wait_until

pytestmark = pytest.mark.e2e


def _sentiflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["SENTIFLOW_HOME"] = str(home)
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", "prefect", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_server_worker_status_down_lifecycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    port = free_port()
    try:
        started = _sentiflow(home, "server", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert f"Prefect UI:  http://127.0.0.1:{port}" in started.stdout
        # the UI calls the API on the same port (not 4200), and the database is under SENTIFLOW_HOME
        ui_settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()
        assert ui_settings["api_url"] == f"http://127.0.0.1:{port}/api"
        assert (home / "prefect" / "prefect.db").is_file()

        again = _sentiflow(home, "server", "--port", str(port))  # idempotent
        assert again.returncode == 0, again.stderr
        assert read_server(settings) is not None

        worker = _sentiflow(home, "worker")
        assert worker.returncode == 0, worker.stderr
        worker_info = read_worker(settings)
        assert worker_info is not None

        status = _sentiflow(home, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout

        server_pid = json.loads((home / "prefect" / "sentiflow-server.json").read_text())["pid"]
        worker_log = home / "prefect" / "worker.log"
        # on a busy machine the worker may still be importing Prefect: let it start (and log) before stopping it
        wait_until(lambda: "Worker" in worker_log.read_text(), timeout=120, what="the worker's first log line")
        down = _sentiflow(home, "down")
        assert down.returncode == 0, down.stderr
        assert not processes.pid_alive(worker_info.pid)
        assert not processes.pid_alive(server_pid)
        assert "worker stopped" in down.stdout and "server stopped" in down.stdout
        assert "Worker" in worker_log.read_text()  # it ran and logged
        # exit code 1 is asserted in test_units (CliRunner); the console entry point drops click's return code
        assert "server: not running" in _sentiflow(home, "status").stdout
    finally:
        _sentiflow(home, "down")


def test_deploy_without_a_server_is_a_one_line_error(tmp_path: Path) -> None:
    result = _sentiflow(tmp_path / "home", "deploy")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no Prefect server")
    assert "Traceback" not in result.stderr
