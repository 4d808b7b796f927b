"""Closed by default: no server of sentiflow's binds beyond loopback without authentication; the refusal is one
line saying how (no socket is opened: these are unit tests, which may not listen at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.cli import run_cli

OPEN = ["0.0.0.0", "192.168.1.20", "::"]


@pytest.mark.parametrize("host", OPEN)
@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["api"], "the API gateway"),
        (["serve", "--model", "/nonexistent"], "the endpoint server"),
        (["prefect", "server"], "the Prefect server"),
        (["prefect", "up"], "the Prefect server"),
    ],
)
def test_a_non_loopback_host_without_auth_is_refused(
    command: list[str],
    what: str,
    host: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", *command, "--host", host)
    assert code == 2, out + err
    assert err.startswith(f"error: refusing to serve {what} on {host} without authentication: keep 127.0.0.1, or ")
    assert err.strip().count("\n") == 0
    if command[0] == "prefect":
        assert "PREFECT_SERVER_API_AUTH_STRING=user:password" in err
    else:
        assert "reverse proxy" in err


def test_the_prefect_server_may_open_with_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import ConfigError
    from sentiflow.cli.prefect import check_server_host

    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    with pytest.raises(ConfigError):
        check_server_host("0.0.0.0")
    check_server_host("127.0.0.1")
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:a-long-password")
    check_server_host("0.0.0.0")


def test_sentiflow_serve_host_from_a_dot_env_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SENTIFLOW_SERVE_HOST=0.0.0.0\n")
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "endpoints", "list")
    assert code == 2 and err.startswith("error: SENTIFLOW_SERVE_HOST='0.0.0.0' is invalid (not a loopback address")


@pytest.mark.parametrize("module", ["serve.endpoint", "serve.gateway"])
def test_the_server_modules_refuse_an_open_host_too(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    monkeypatch.setenv("SENTIFLOW_HOME", str(tmp_path / "home"))
    (tmp_path / "model" / "code").mkdir(parents=True)
    (tmp_path / "model" / "code" / "inference.py").write_text("")
    main = importlib.import_module(module).main
    args = [str(tmp_path / "model")] if module == "serve.endpoint" else []
    try:
        code = main([*args, "--host", "0.0.0.0", "--port", "0"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err + (code if isinstance(code, str) else "")
    assert code not in (0, None) and "refusing to serve" in err and "0.0.0.0 without authentication" in err
