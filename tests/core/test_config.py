"""Settings: every bad value — a SENTIFLOW_* variable, a CLI flag, a flow parameter — is one line that names it and
says what it accepts (exit 2 on the command line, no traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from core.config import Architecture, Settings, get_settings, setting_label
from core.errors import ConfigError
from tests.fixtures.cli import run_cli

BAD_VALUES: dict[str, str] = {
    "backend": "gcp",
    "prefect_port": "70000",
    "data_url": "gcs://bucket/imdb.tar.gz",
    "data_sha256": "not-a-hash",
    "vocab_size": "abc",
    "max_len": "0",
    "validation_fraction": "0.9",
    "seed": "-1",
    "expected_rows_per_split": "many",
    "min_review_chars": "0",
    "max_review_chars": "50",
    "architecture": "gpt",
    "tokenizer_version": "words-3",
    "min_behaviour_pass_rate": "1.5",
    "epochs": "1.5",
    "embedding_dim": "0",
    "hidden_dim": "-3",
    "batch_size": "x",
    "learning_rate": "0",
    "patience": "0",
    "train_instance_count": "0",
    "min_accuracy": "1.5",
    "max_regression": "-0.1",
    "parity_sample": "-1",
    "serve_host": "not a host",
    "serve_max_body_bytes": "0",
    "serve_max_reviews": "0",
    "api_port": "65536",
    "transform_max_payload_mb": "101",
    "idle_minutes": "0",
    "max_age_hours": "-2",
    "notify_url": "hooks.slack.com/no-scheme",
    "aws_region": "mars",
    "aws_bucket": "Bad_Bucket",
    "aws_role_arn": "role/sentiflow",
    "aws_lambda_role_arn": "arn:aws:iam::12:role/x",
    "aws_train_instance_type": "m5.large",
    "aws_train_instance_count": "0",
    "aws_use_spot": "maybe",
    "aws_network_isolation": "maybe",
    "aws_transform_instance_type": "ml-m5-large",
    "aws_endpoint_instance_type": "large",
    "aws_framework_version": "latest",
    "aws_py_version": "3.11",
    "aws_poll_seconds": "0",
    "aws_max_runtime_s": "10",
    "aws_credentials_block": "My Block",
    "instance_prices_usd": "{not json",
}
FREE_FORM = {
    "home": "any folder path is a valid home",
    "aws_prefix": "any S3 key prefix is valid (the empty one too)",
}


def test_every_setting_has_a_bad_value_or_a_reason_to_have_none() -> None:
    assert set(BAD_VALUES) | set(FREE_FORM) == set(Settings.model_fields)
    assert not set(BAD_VALUES) & set(FREE_FORM)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variable = f"SENTIFLOW_{name.upper()}"
    monkeypatch.setenv(variable, BAD_VALUES[name])
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "endpoints", "list")
    assert code == 2, out + err
    assert err.startswith(f"error: {variable}") and "accepts" in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in out + err


def test_flags_and_flow_parameters_are_named_as_written() -> None:
    with pytest.raises(ConfigError, match=r"^--backend='gcp' is invalid .*: it accepts one of local, aws$"):
        get_settings(backend="gcp")
    with pytest.raises(ConfigError, match=r"^flow parameter max_len=0 is invalid .*it accepts an integer ≥ 1$"):
        get_settings("parameter", max_len=0)
    message = "SENTIFLOW_AWS_REGION='mars' is invalid (wrong format): it accepts an AWS region name such as us-east-1"
    assert setting_label("aws_region", "env") in message
    with pytest.raises(ConfigError) as caught:
        get_settings(epochs=0, vocab_size=1)
    assert (
        str(caught.value).count("; ") == 1
        and "--epochs=0" in str(caught.value)
        and "--vocab-size=1" in str(caught.value)
    )


def test_bad_flag_on_the_command_line_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "run", "--backend", "gcp")
    assert code == 2 and err.startswith("error: --backend='gcp' is invalid") and "local, aws" in err
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "run", "--epochs", "0")
    assert code == 2 and "'--epochs'" in err and err.strip().count("\n") == 0
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "home", "data", "prepare", "--vocab-sise", "9")
    assert code == 2 and "No such option: --vocab-sise" in err and "Traceback" not in out + err


def test_the_architecture_choices_are_the_networks_model_network_builds() -> None:
    from model.network import ARCHITECTURES

    assert set(get_args(Architecture)) == set(ARCHITECTURES)


def test_secrets_never_show_in_repr_dumps_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        notify_url="https://hooks.slack.com/services/T0/B0/PLANTED-HOOK",
        data_url="http://user:PLANTED-PW@127.0.0.1/a.tar.gz?X-Amz-Signature=PLANTED-SIG",
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "PLANTED" not in text, text
    assert settings.notify_url is not None and settings.notify_url.get_secret_value().endswith("PLANTED-HOOK")
    assert settings.with_overrides(epochs=2).notify_url == settings.notify_url  # overrides keep the secret
    monkeypatch.setenv("SENTIFLOW_NOTIFY_URL", "no-scheme/PLANTED-HOOK")
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert "SENTIFLOW_NOTIFY_URL is invalid" in str(caught.value) and "PLANTED" not in str(caught.value)
    monkeypatch.delenv("SENTIFLOW_NOTIFY_URL")
    monkeypatch.setenv("SENTIFLOW_DATA_URL", "gcs://user:PLANTED-PW@bucket/a.tar.gz?sig=PLANTED-SIG")
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert "SENTIFLOW_DATA_URL='gcs://bucket/a.tar.gz' is invalid" in str(caught.value), caught.value
    assert "PLANTED" not in str(caught.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_a_non_loopback_serve_host_is_refused_saying_how(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIFLOW_SERVE_HOST", host)
    with pytest.raises(ConfigError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith(f"SENTIFLOW_SERVE_HOST={host!r} is invalid (not a loopback address")
    assert "reverse proxy" in message and "\n" not in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_serve_hosts_are_accepted(host: str) -> None:
    assert Settings(serve_host=host).serve_host == host
