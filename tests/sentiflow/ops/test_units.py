"""Fast checks of sentiflow's Prefect operations code (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from core.config import Settings
from core.errors import ConfigError, SentiflowError
from sentiflow.cli import app
from sentiflow.ops.deploy import idle_seconds, render_prefect_file
from sentiflow.ops.notifications import classify_notify_url, notification_block_for
from sentiflow.ops.server import resolve_api_url, server_env, start_server, write_logging_configs
from tests.fixtures.prefect_helpers import PROJECT_ROOT


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "slack"),
        ("mailto://user:secret@example.com?to=ops@example.com", "apprise"),
        ("json://127.0.0.1:9911/hook", "apprise"),
        ("https://chat.example.com/hooks/abc", "webhook"),
        ("http://127.0.0.1:8080/notify", "webhook"),
    ],
)
def test_notify_url_kinds(url: str, kind: str) -> None:
    assert classify_notify_url(url) == kind


@pytest.mark.parametrize("url", ["not a url", "nosuchscheme://x", "https:///path-only"])
def test_unusable_notify_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        classify_notify_url(url)


def test_notification_blocks_by_kind() -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    assert isinstance(notification_block_for("json://127.0.0.1:1/x"), SlackWebhook)
    webhook = notification_block_for("http://127.0.0.1:1/x")
    assert isinstance(webhook, CustomWebhookNotificationBlock)
    assert webhook.method == "POST" and webhook.json_data["text"] == "{{body}}"


def test_idle_window_is_at_least_ten_seconds() -> None:
    assert idle_seconds(Settings(idle_minutes=60)) == 3600
    assert idle_seconds(Settings(idle_minutes=0.01)) == 10


def test_rendered_prefect_file_sets_the_idle_window(tmp_path: Path) -> None:
    rendered = render_prefect_file(Settings(idle_minutes=0.5), PROJECT_ROOT / "prefect.yaml", tmp_path / "r.yaml")
    config = yaml.safe_load(rendered.read_text())
    teardown = next(d for d in config["deployments"] if d["name"] == "teardown-idle-endpoints")
    assert teardown["triggers"][0]["within"] == 30


def test_prefect_yaml_declares_the_three_deployments() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    assert config["build"] is None and config["push"] is None
    assert "prefect.deployments.steps.set_working_directory" in config["pull"][0]
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {"train-and-deploy", "teardown-idle-endpoints", "evaluate"}
    train = deployments["train-and-deploy"]
    assert train["entrypoint"] == "flows/pipeline.py:pipeline"
    assert train["schedules"][0]["cron"] == "0 3 * * 1"
    assert train["concurrency_limit"]["limit"] == 1
    teardown = deployments["teardown-idle-endpoints"]
    assert teardown["entrypoint"] == "flows/teardown.py:teardown_idle_endpoints"
    assert teardown["schedules"][0]["interval"] == 900
    trigger = teardown["triggers"][0]
    assert trigger["posture"] == "Proactive" and trigger["parameters"] == {"endpoint": "{{ event.resource.id }}"}
    assert deployments["evaluate"]["entrypoint"] == "flows/evaluate.py:evaluate"
    assert deployments["evaluate"]["schedules"] == []
    for deployment in deployments.values():
        assert deployment["work_pool"]["name"] == "sentiflow-local"
        assert deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"


def test_server_env_pins_port_for_api_and_ui_and_disables_telemetry(tmp_path: Path) -> None:
    env = server_env(Settings(home=tmp_path / "home"), "127.0.0.1", 4555)
    assert env["PREFECT_SERVER_API_PORT"] == "4555"
    assert env["PREFECT_API_URL"] == env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4555/api"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4555"  # not Prefect's "*"
    assert Path(env["PREFECT_HOME"]).is_absolute() and env["PREFECT_HOME"].startswith(str(tmp_path))


def test_the_background_server_logs_to_a_file_never_to_its_pipes(tmp_path: Path) -> None:
    """`prefect server start --background` leaves the server's stdout/stderr on pipes nobody reads: every log
    handler of Prefect's and of uvicorn's must write to the log file instead."""
    import json

    settings = Settings(home=tmp_path / "home")
    env = server_env(settings, "127.0.0.1", 4555)
    log = tmp_path / "home" / "prefect" / "server.log"
    (tmp_path / "home" / "prefect").mkdir(parents=True)
    write_logging_configs(settings, log)
    prefect_config = yaml.safe_load(Path(env["PREFECT_LOGGING_SETTINGS_PATH"]).read_text())
    uvicorn_config = json.loads(Path(env["UVICORN_LOG_CONFIG"]).read_text())
    for config in (prefect_config, uvicorn_config):
        for handler in config["handlers"].values():
            assert "stream" not in handler, handler
            if handler["class"].endswith(("StreamHandler", "ConsoleHandler")):
                raise AssertionError(f"a console handler is left: {handler}")
    assert prefect_config["handlers"]["console"]["filename"] == str(log)
    assert prefect_config["root"]["handlers"] == ["console"]
    assert {uvicorn_config["handlers"]["file"]["filename"]} == {str(log)}


def test_deploy_without_a_server_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.cli import run_cli

    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "prefect", "deploy")
    assert code == 2 and err.startswith("error: no Prefect server") and "Traceback" not in out + err


def test_no_server_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(SentiflowError, match="sentiflow prefect server"):
        resolve_api_url(Settings(home=tmp_path / "home"))
    with pytest.raises(ConfigError):
        start_server(Settings(home=tmp_path / "home"), port=70000)


def test_status_reports_nothing_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIFLOW_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["prefect", "status"])
    assert result.exit_code == 1
    assert "server: not running" in result.output and "worker: not running" in result.output


@pytest.mark.parametrize(
    "url",
    ["https://hooks.slack.com/services/T0/B0/PLANTED-HOOK", "http://127.0.0.1:1/hook?token=PLANTED-TOKEN"],
)
def test_the_notify_url_is_a_block_secret(url: str) -> None:
    """The URL is in a secret field only: shown masked, dumped masked (as the API returns a block without
    ``include_secrets``)."""
    from pydantic import SecretStr

    block = notification_block_for(SecretStr(url))
    assert "PLANTED" not in repr(block) and "PLANTED" not in json.dumps(block.model_dump(mode="json"))
    assert "PLANTED" in json.dumps(block.model_dump(mode="json", context={"include_secrets": True}))


def test_notify_url_errors_do_not_echo_it() -> None:
    for url in ("no-scheme/PLANTED-TOKEN", "https:///PLANTED-TOKEN", "nosuchscheme://PLANTED-TOKEN"):
        with pytest.raises(ConfigError) as caught:
            classify_notify_url(url)
        assert "PLANTED" not in str(caught.value)


def test_the_failure_message_names_parameters_not_their_values() -> None:
    from sentiflow.ops.notifications import FAILURE_BODY

    assert "flow_run.parameters }}" not in FAILURE_BODY and "flow_run.parameters.keys()" in FAILURE_BODY
