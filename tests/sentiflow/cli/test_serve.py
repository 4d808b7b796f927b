"""``sentiflow serve``: a real process serving a model, and one-line errors for models it cannot load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.tiny_model import TinyModel

SENTIFLOW = [sys.executable, "-c", "from sentiflow.cli import main; main()"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SENTIFLOW_HOME": str(tmp_path / "home")}


@pytest.mark.e2e
def test_serve_archive_on_free_port_then_sigterm(tiny: TinyModel, tmp_path: Path) -> None:
    port_file, state_file = tmp_path / "port", tmp_path / "state.json"
    command = SENTIFLOW + [
        "serve", "--model", tiny.tar_path.as_uri(), "--port", "0", "--name", "tiny-ep",
        "--port-file", str(port_file), "--state-file", str(state_file),
        "--access-log", str(tmp_path / "access.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), process.stderr.read()
        url = line.removeprefix("listening on ")
        assert url.endswith(f":{port_file.read_text().strip()}")
        request = urllib.request.Request(
            f"{url}/endpoints/tiny-ep/invocations",
            data=json.dumps({"review": tiny.test_reviews[0]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["label"] in {"positive", "negative"}
        with urllib.request.urlopen(f"{url}/stats", timeout=30) as response:
            assert json.loads(response.read())["invocations"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    assert json.loads(state_file.read_text())["invocations"] == 1
    log = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [entry["path"] for entry in log] == ["/endpoints/tiny-ep/invocations", "/stats"]


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
