"""The command line as a user meets it: help, exit codes, and one-line errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def sentiflow(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SENTIFLOW_HOME": str(home)}
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)  # noqa: S603


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = sentiflow("--help", home=tmp_path)
    assert result.returncode == 0
    for command in ("run", "data", "train", "serve", "api", "endpoints", "models", "rollback", "teardown", "prefect"):
        assert command in result.stdout


@pytest.mark.e2e
def test_a_bad_source_fails_the_flow_with_one_line_and_no_traceback(tmp_path: Path, prefect_api: str) -> None:
    result = sentiflow("data", "prepare", "--source", str(tmp_path / "missing.tar.gz"), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert f"error: data source '{tmp_path / 'missing.tar.gz'}' does not exist; pass --source" in result.stderr
    assert "Traceback" not in output


@pytest.mark.e2e
def test_an_unreachable_source_is_retried_then_one_line_naming_the_fix(tmp_path: Path, prefect_api: str) -> None:
    source = "http://127.0.0.1:1/aclImdb_v1.tar.gz"  # nothing listens on port 1: refused at once, every attempt
    result = sentiflow("data", "prepare", "--source", source, "--sha256", "0" * 64, home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "Retry 3/3" in output  # retried as a transient fault first
    assert f"error: download of {source} failed (ConnectionError); check the network, or pass a local copy" in output
    assert "Traceback" not in output


def test_failed_validation_exits_1_and_a_missing_folder_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.cli import run_cli
    from tests.fixtures.synthetic import write_aclimdb

    write_aclimdb(tmp_path / "data", per_class=5)
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "data", "validate", str(tmp_path / "data"))
    assert code == 1 and "rows per split (train)" in out
    code, _, err = run_cli(monkeypatch, capsys, tmp_path, "data", "validate", str(tmp_path / "nowhere"))
    assert code == 2 and "is not an aclImdb folder" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_a_bug_is_one_line_naming_the_file_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sentiflow.cli as cli
    from tests.fixtures.cli import run_cli

    def broken(**_: object) -> None:
        raise RuntimeError("boom at http://user:PLANTED@example.com/x?sig=PLANTED")

    monkeypatch.setattr(cli, "app", broken)
    code, out, err = run_cli(monkeypatch, capsys, tmp_path, "endpoints", "list")
    assert code == 1 and out == ""
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line and "PLANTED" not in line
    assert line.startswith("error: unexpected RuntimeError: boom at http://example.com/x — a sentiflow bug;")
    report = Path(line.split("the traceback is in ", 1)[1].split(" ", 1)[0])
    text = report.read_text()
    assert "Traceback" in text and "raise RuntimeError" in text and "PLANTED" not in text
    report.unlink()
