from __future__ import annotations

from pathlib import Path

import pytest

from backends.local.storage import LocalArtifactStore
from backends.local.training import LocalTrainer
from core.config import Settings
from core.errors import ConfigError
from tasks.train import (
    epoch_table,
    job_name_for,
    plot_history,
    train,
    training_hyperparameters,
    training_report,
)
from tests.fixtures.synthetic import write_channels

TINY = {"epochs": 1, "embedding_dim": 8, "hidden_dim": 8, "batch_size": 32, "num_threads": 1}
HISTORY = [
    {"epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_accuracy": 0.7, "epoch_s": 3.0},
    {"epoch": 2, "train_loss": 0.4, "val_loss": 0.45, "val_accuracy": 0.8, "epoch_s": 2.9},
]


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.store_dir)


def _put_channels(store: LocalArtifactStore, source: Path, key: str) -> dict[str, str]:
    for path in source.rglob("*.*"):
        store.put_file(path, f"channels/{key}/{path.relative_to(source).as_posix()}")
    return {name: store.uri(f"channels/{key}/{name}") for name in ("train", "validation")}


def test_hyperparameters_are_settings_with_overrides(settings: Settings) -> None:
    merged = training_hyperparameters(settings, {"epochs": 7, "hidden_dim": None, "dropout": 0.1})
    assert merged["epochs"] == 7 and merged["dropout"] == 0.1
    assert merged["hidden_dim"] == settings.hidden_dim and merged["architecture"] == settings.architecture


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"architecture": "gpt"}, "--architecture='gpt' is invalid"),
        ({"dropuot": 0.1}, "dropuot"),
    ],
)
def test_bad_hyperparameters_are_config_errors(settings: Settings, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        training_hyperparameters(settings, overrides)


def test_job_name_follows_channels_code_and_hyperparameters() -> None:
    uris = {"train": "file:///s/channels/k1/train", "validation": "file:///s/channels/k1/validation"}
    other = {"train": "file:///s/channels/k2/train", "validation": "file:///s/channels/k2/validation"}
    name = job_name_for(uris, TINY, "code1")
    assert name == job_name_for(dict(reversed(list(uris.items()))), TINY, "code1")
    assert name != job_name_for(other, TINY, "code1")  # channel URIs are content addresses
    assert name != job_name_for(uris, {**TINY, "epochs": 2}, "code1")
    assert name != job_name_for(uris, TINY, "code2")
    assert len(name) <= 63 and name.replace("-", "").isalnum()


@pytest.mark.e2e  # a training job in a child process
def test_train_runs_one_job_on_the_store_channels(
    settings: Settings, store: LocalArtifactStore, tmp_path: Path
) -> None:
    uris = _put_channels(store, write_channels(tmp_path / "made", per_class=60), "k1")
    lines: list[str] = []
    result = train(LocalTrainer(settings, store), uris, TINY, lines.append)
    assert any(line.startswith("epoch 1/1") for line in lines)
    assert store.exists(store.key_from_uri(result.model_uri)) and result.hyperparameters == TINY


def test_hyperparameter_errors_name_the_flag_or_the_parameter(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"^--epochs=0 is invalid"):
        training_hyperparameters(settings, {"epochs": 0})
    with pytest.raises(ConfigError, match=r"^flow parameter epochs=0 is invalid"):
        training_hyperparameters(settings, {"epochs": 0}, origin="parameter")


def test_missing_validation_channel_is_a_config_error(settings: Settings, store: LocalArtifactStore) -> None:
    with pytest.raises(ConfigError, match="validation"):
        train(LocalTrainer(settings, store), {"train": "file:///x"}, TINY, print)


def test_report_embeds_the_png_plot() -> None:
    png = plot_history(HISTORY)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    from backends.base import TrainingResult

    metrics = {"history": HISTORY, "best_epoch": 2, "epochs_run": 2, "val_loss": 0.45, "val_accuracy": 0.8}
    result = TrainingResult("job-x", "file:///m.tar.gz", metrics, TINY, 6.0)
    markdown = training_report(result, png=png)
    assert "`job-x`" in markdown and "val_accuracy 0.8000" in markdown
    assert "](data:image/png;base64,iVBORw0KGgo" in markdown
    assert epoch_table(HISTORY)[1] == {
        "epoch": 2,
        "train_loss": 0.4,
        "val_loss": 0.45,
        "val_accuracy": 0.8,
        "epoch_s": 2.9,
    }


@pytest.mark.e2e
def test_train_task_in_a_flow_publishes_curves_and_epoch_table(
    settings: Settings, store: LocalArtifactStore, tmp_path: Path, prefect_api: str
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.train import train_model

    uris = _put_channels(store, write_channels(tmp_path / "made", per_class=60), "k2")

    @flow(name="train-e2e")
    def train_flow() -> object:
        hyperparameters = training_hyperparameters(
            settings, {"epochs": 2, "embedding_dim": 8, "hidden_dim": 8, "num_threads": 1}
        )
        return train_model(uris, hyperparameters, 1, "local")

    result = train_flow()
    assert result.hyperparameters["epochs"] == 2 and result.hyperparameters["architecture"] == "nb-lstm"
    assert store.exists(store.key_from_uri(result.model_uri))
    with get_client(sync_client=True) as client:
        artifacts = {artifact.key: artifact for artifact in client.read_artifacts()}
    assert "data:image/png;base64," in artifacts["training-curves"].data
    assert "training-epochs" in artifacts


def test_code_hash_follows_the_shipped_sources(tmp_path: Path) -> None:
    import shutil

    from model.artifact import PACKAGE_DIR
    from tasks.train import training_code_hash

    package = tmp_path / "model"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert training_code_hash(package) == training_code_hash()
    before = training_code_hash(package)
    (tmp_path / "server.py").write_text("# code outside model/ does not change the model\n")
    (package / "notes.txt").write_text("not a module\n")
    assert training_code_hash(package) == before
    (package / "network.py").write_text("# changed\n")
    assert training_code_hash(package) != before


def test_a_location_passed_as_a_flow_hyperparameter_is_one_line_naming_the_allowed_keys(settings: Settings) -> None:
    """Issue 15: ``hyperparameters={"model_dir": ...}`` on a flow must never reach training as ``--model_dir``."""
    with pytest.raises(ConfigError) as caught:
        training_hyperparameters(settings, {"model_dir": "/some/path"}, origin="parameter")
    message = str(caught.value)
    assert "'model-dir' is not a hyperparameter; allowed: architecture" in message and "\n" not in message
