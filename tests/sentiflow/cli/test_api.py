"""``sentiflow api --stop``: stops the gateway a deploy left running in the background, as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.local.api import LocalApiGateway
from core import processes
from core.config import Settings


def sentiflow(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", *args]
    environment = {**os.environ, "SENTIFLOW_HOME": str(home), **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)  # noqa: S603


@pytest.mark.e2e
def test_api_stop_stops_the_background_gateway_and_says_so(settings: Settings) -> None:
    gateway = LocalApiGateway(settings.with_overrides(api_port=0))
    try:
        url = gateway.ensure_running(print)  # as a deploy starts it
        record = gateway.record()
        assert record is not None and processes.alive(record)

        done = sentiflow("api", "--stop", home=settings.home)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"stopped the API gateway on {url}"
        assert not processes.alive(record) and gateway.record() is None

        again = sentiflow("api", "--stop", home=settings.home)
        assert again.returncode == 0 and again.stdout.startswith("no API gateway started by a deploy is running")
    finally:
        gateway.stop(timeout=10)


def test_api_stop_on_aws_names_the_backend(tmp_path: Path) -> None:
    done = sentiflow("api", "--stop", home=tmp_path, SENTIFLOW_BACKEND="aws")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --stop is for the local gateway; with SENTIFLOW_BACKEND=aws")
    assert "Traceback" not in done.stderr
