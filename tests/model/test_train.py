from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact
from model.train import (
    EPOCH_LINE,
    METRIC_DEFINITIONS,
    TrainConfig,
    TrainPaths,
    main,
    parse_hyperparameters,
    run_training,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--embedding-dim",
    "8",
    "--hidden-dim",
    "8",
    "--batch-size",
    "32",
    "--seed",
    "5",
    "--num-threads",
    "1",
]


def _paths(channels: Path, job: Path) -> TrainPaths:
    return TrainPaths(
        model_dir=job / "model",
        train=channels / "train",
        validation=channels / "validation",
        output_dir=job / "output",
        checkpoint_dir=job / "checkpoints",
    )


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{"embedding_dim": 8, "hidden_dim": 8, "batch_size": 32, "seed": 5, **overrides})


def _env(channels: Path, job: Path) -> dict[str, str]:
    return {
        "SM_MODEL_DIR": str(job / "model"),
        "SM_CHANNEL_TRAIN": str(channels / "train"),
        "SM_CHANNEL_VALIDATION": str(channels / "validation"),
        "SM_OUTPUT_DATA_DIR": str(job / "output"),
        "SM_CHECKPOINT_DIR": str(job / "checkpoints"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
    }


# --- hyperparameters and early errors --------------------------------------------------------------


def test_hyperparameters_accept_dashes_underscores_and_sagemaker_strings() -> None:
    config = parse_hyperparameters(
        [
            "--hidden-dim",
            "7",
            "--embedding_dim",
            "5",
            "--lr",
            "0.01",
            "--architecture",
            "lstm-pool",
            "--epochs=3",
        ]
    )
    assert (config.hidden_dim, config.embedding_dim, config.learning_rate) == (7, 5, 0.01)
    assert (config.architecture, config.epochs) == ("lstm-pool", 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--architecture", "gpt"], "--architecture 'gpt' is unknown"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive number"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--epochs", "many"], "invalid int value: 'many'"),
        (["--hiden-dim", "4"], "unrecognized arguments: --hiden-dim"),
    ],
)
def test_bad_hyperparameters_fail_before_training(
    argv: list[str], message: str, channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, _env(channels, tmp_path)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("channel", ["train", "validation"])
def test_missing_channel_fails_before_training(
    channel: str, channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_env(channels, tmp_path), f"SM_CHANNEL_{channel.upper()}": str(tmp_path / "nowhere")}
    assert main(TINY, env) == 2
    err = capsys.readouterr().err
    assert f"channel '{channel}'" in err and str(tmp_path / "nowhere") in err
    assert not (tmp_path / "checkpoints").exists()


def test_channel_without_its_csv_fails_before_training(
    channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**_env(channels, tmp_path), "SM_CHANNEL_VALIDATION": str(empty)}
    assert main(TINY, env) == 2
    assert f"{empty / 'validation.csv'} not found" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_several_hosts_are_refused(channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**_env(channels, tmp_path), "SM_HOSTS": '["algo-1", "algo-2"]'}
    assert main(TINY, env) == 2
    assert "instance_count=1" in capsys.readouterr().err


def test_metric_definitions_match_the_epoch_line() -> None:
    line = "epoch=3 train_loss=0.3121 val_loss=0.2987 val_accuracy=0.8810 epoch_s=41.2"
    found = {item["Name"]: re.search(item["Regex"], line).group(1) for item in METRIC_DEFINITIONS}
    assert found == {
        "epoch": "3",
        "train:loss": "0.3121",
        "validation:loss": "0.2987",
        "validation:accuracy": "0.8810",
        "epoch:seconds": "41.2",
    }
    assert EPOCH_LINE.match(line)


# --- training --------------------------------------------------------------------------------------


@pytest.mark.e2e  # a training job in a child process
def test_script_mode_smoke_run_from_a_staged_source_dir(channels: Path, tmp_path: Path) -> None:
    """One epoch through the SageMaker contract, from a copy of the source tree, run from another folder."""
    source = tmp_path / "source"
    shutil.copytree(PROJECT_ROOT / "model", source / "model", ignore=shutil.ignore_patterns("__pycache__"))
    job = tmp_path / "job"
    env = {**os.environ, **_env(channels, job), "TRAINING_JOB_NAME": "smoke-1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, str(source / "model" / "train.py"), *TINY, "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch=")]
    assert len(epoch_lines) == 1 and EPOCH_LINE.match(epoch_lines[0])

    model = load_artifact(job / "model")
    assert model.version == "smoke-1"
    assert model.info["architecture"] == "bilstm-pool"
    scores = model.predict_texts(["a wonderful, brilliant film", "an awful, boring waste"])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    assert (job / "output" / "metrics.json").is_file()
    assert (job / "checkpoints" / "checkpoint.pth").is_file()


def test_training_learns_the_synthetic_sentiment(channels: Path, tmp_path: Path) -> None:
    config = _config(epochs=3, batch_size=16, learning_rate=0.01, patience=3)
    metrics = run_training(config, _paths(channels, tmp_path), log=lambda line: None)
    assert metrics["val_accuracy"] >= 0.9
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]
    model = load_artifact(tmp_path / "model")
    positive, negative = model.predict_texts(["great wonderful loved excellent film", "awful terrible boring film"])
    assert positive > 0.5 > negative


def test_same_seed_gives_the_same_weights(channels: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        run_training(_config(epochs=1, seed=seed), _paths(channels, tmp_path / name), log=lambda line: None)
    weights = {name: torch.load(tmp_path / name / "model" / "model.pth", weights_only=True) for name in "abc"}
    assert all(torch.equal(weights["a"][key], weights["b"][key]) for key in weights["a"])
    assert not all(torch.equal(weights["a"][key], weights["c"][key]) for key in weights["a"])


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(channels: Path, tmp_path: Path) -> None:
    interrupted = _paths(channels, tmp_path / "interrupted")
    run_training(_config(epochs=1, patience=5), interrupted, log=lambda line: None)
    lines: list[str] = []
    resumed = run_training(_config(epochs=2, patience=5), interrupted, log=lines.append)
    assert any(line.startswith("resuming from checkpoint") and "after epoch 1" in line for line in lines)
    assert [line.split()[0] for line in lines if line.startswith("epoch=")] == ["epoch=2"]
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2]

    straight = run_training(_config(epochs=2, patience=5), _paths(channels, tmp_path / "straight"), log=print)
    assert [e["val_loss"] for e in resumed["history"]] == [e["val_loss"] for e in straight["history"]]
    a = torch.load(interrupted.model_dir / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "straight" / "model" / "model.pth", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_checkpoint_of_other_hyperparameters_is_not_resumed(channels: Path, tmp_path: Path) -> None:
    paths = _paths(channels, tmp_path)
    run_training(_config(epochs=1), paths, log=lambda line: None)
    lines: list[str] = []
    metrics = run_training(_config(epochs=1, hidden_dim=6), paths, log=lines.append)
    assert any("written with other hyperparameters" in line for line in lines)
    assert [entry["epoch"] for entry in metrics["history"]] == [1]
