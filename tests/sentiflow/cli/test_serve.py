"""``sentiflow serve``: the endpoint server in the foreground (the CLI becomes ``python -m serve.endpoint``), and
one-line errors for models it cannot serve."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.tiny_model import TinyModel

SENTIFLOW = [sys.executable, "-c", "from sentiflow.cli import main; main()"]


@pytest.mark.e2e
def test_serve_an_archive_on_a_free_port_then_sigterm(tiny: TinyModel, tmp_path: Path) -> None:
    command = SENTIFLOW + [
        "serve", "--model", tiny.tar_path.as_uri(), "--port", "0", "--name", "tiny-ep",
        "--state-dir", str(tmp_path / "state"), "--access-log", str(tmp_path / "access.log"),
    ]  # fmt: skip
    env = {**os.environ, "SENTIFLOW_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
        assert match, line
        url = match.group(1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the port is bound before the model loads: /ping says when it is ready
            try:
                if httpx.get(f"{url}/ping", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        answer = httpx.post(
            f"{url}/endpoints/tiny-ep/invocations", json={"review": tiny.test_reviews[0]}, trust_env=False, timeout=30
        )
        assert answer.status_code == 200 and answer.json()["label"] in {"positive", "negative"}
        assert httpx.get(f"{url}/stats", trust_env=False, timeout=10).json()["invocations"] == 1
    finally:
        process.send_signal(signal.SIGTERM)  # the CLI exec'd the server: the signal reaches it
        code = process.wait(timeout=60)
    assert code == 0
    paths = [json.loads(entry)["path"] for entry in (tmp_path / "access.log").read_text().splitlines()]
    assert "/endpoints/tiny-ep/invocations" in paths


def test_serve_missing_model_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, tmp_path / "home", "serve", "--model", str(tmp_path / "nope.tar.gz"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "does not exist" in err and "nope.tar.gz" in err and "Traceback" not in err


def test_serve_folder_without_weights_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, tmp_path / "home", "serve", "--model", str(tmp_path))
    assert code == 2 and "holds no model.pth" in err
