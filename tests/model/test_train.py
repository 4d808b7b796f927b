from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import load_artifact
from model.train import (
    EPOCH_LINE,
    METRIC_DEFINITIONS,
    Distributed,
    TrainConfig,
    TrainingError,
    TrainPaths,
    check_hyperparameters,
    default_hyperparameters,
    distributed_from_env,
    hyperparameter_names,
    main,
    parse_hyperparameters,
    rank_share,
    resolve_paths,
    run_training,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = [  # the one-loop path (bilstm-pool); nb-lstm's staged path has its own tests below
    "--architecture",
    "bilstm-pool",
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
    return TrainConfig(
        **{"architecture": "bilstm-pool", "embedding_dim": 8, "hidden_dim": 8, "batch_size": 32, "seed": 5, **overrides}
    )


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
            "--learning_rate",
            "0.01",
            "--architecture",
            "lstm-pool",
            "--epochs=3",
        ]
    )
    assert (config.hidden_dim, config.embedding_dim, config.learning_rate) == (7, 5, 0.01)
    assert (config.architecture, config.epochs) == ("lstm-pool", 3)


def test_hyperparameters_are_exactly_the_config_fields() -> None:
    assert set(hyperparameter_names()) == set(default_hyperparameters())
    assert check_hyperparameters({"hidden-dim": 16, "epochs": 2, "learning_rate": 0.01}) == {
        "hidden_dim": 16,
        "epochs": 2,
        "learning_rate": 0.01,
    }
    with pytest.raises(TrainingError, match=r"^bad hyperparameters: 'hidden_dim' is given twice"):
        check_hyperparameters({"hidden-dim": 16, "hidden_dim": 8})
    with pytest.raises(TrainingError, match="--epochs must be at least 1"):
        check_hyperparameters({"epochs": 0})
    with pytest.raises(TrainingError, match="invalid int value: 'True'"):
        check_hyperparameters({"epochs": True})  # the toolkit would pass --epochs True


@pytest.mark.parametrize(
    "key", ["model_dir", "model-dir", "train", "validation", "checkpoint_dir", "output_data_dir", "sagemaker_program"]
)
def test_locations_and_sagemaker_keys_are_not_hyperparameters(key: str) -> None:
    with pytest.raises(TrainingError) as caught:
        check_hyperparameters({key: "/some/path", "epochs": 1})
    message = str(caught.value)
    assert "\n" not in message and f"{key!r} is not a hyperparameter" in message
    assert "allowed: architecture, epochs, batch_size" in message


def test_a_location_flag_is_refused_and_nothing_is_written_or_removed_there(
    channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15: ``hyperparameters={"model_dir": "/some/path"}`` reached the script as ``--model_dir /some/path``,
    which trained into it and removed ``/some/path/code``."""
    target = tmp_path / "some" / "path"
    (target / "code").mkdir(parents=True)
    (target / "code" / "keep.txt").write_text("mine")
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    job = tmp_path / "job"
    assert main([*TINY, "--model_dir", str(target)], _env(channels, job)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'model_dir' is not a hyperparameter; allowed: architecture" in err
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert (target / "code" / "keep.txt").read_text() == "mine"
    assert not job.exists()


def test_locations_come_from_the_environment(tmp_path: Path) -> None:
    base = tmp_path / "opt-ml"
    paths = resolve_paths({"SAGEMAKER_BASE_DIR": str(base)})
    assert paths == TrainPaths(
        model_dir=base / "model",
        train=base / "input" / "data" / "train",
        validation=base / "input" / "data" / "validation",
        output_dir=base / "output" / "data",
        checkpoint_dir=base / "checkpoints",  # the toolkit sets no SM_CHECKPOINT_DIR
    )
    env = {"SAGEMAKER_BASE_DIR": str(base), "SM_MODEL_DIR": str(tmp_path / "m"), "SM_CHANNEL_TRAIN": "/t"}
    assert resolve_paths(env).model_dir == tmp_path / "m" and resolve_paths(env).train == Path("/t")
    assert resolve_paths(env).checkpoint_dir == base / "checkpoints"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--architecture", "gpt"], "--architecture 'gpt' is unknown"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive number"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--epochs", "many"], "invalid int value: 'many'"),
        (["--hiden-dim", "4"], "'hiden-dim' is not a hyperparameter; allowed: architecture"),
        (["--epoch", "4"], "'epoch' is not a hyperparameter"),  # no abbreviations
        (["--epochs", "2", "stray"], "unexpected argument(s) 'stray'"),
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


def test_channel_without_its_file_fails_before_training(
    channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**_env(channels, tmp_path), "SM_CHANNEL_VALIDATION": str(empty)}
    assert main(TINY, env) == 2
    assert f"{empty / 'validation.npz'} not found" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_several_hosts_without_torchrun_are_refused(
    channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_env(channels, tmp_path), "SM_HOSTS": '["algo-1", "algo-2"]'}
    assert main(TINY, env) == 2
    assert "not launched by torchrun" in capsys.readouterr().err


def test_a_script_error_is_written_to_the_toolkits_failure_file_once(
    channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SageMaker reports ``$SM_OUTPUT_DIR/failure`` as FailureReason; the first writer wins (the toolkit keeps it)."""
    output = tmp_path / "output"
    output.mkdir()
    env = {**_env(channels, tmp_path), "SM_OUTPUT_DIR": str(output)}
    assert main(["--epochs", "0"], env) == 2
    line = (output / "failure").read_text()
    assert line == "bad hyperparameters: --epochs must be at least 1, got 0"
    assert main(["--dropout", "2"], env) == 2
    assert (output / "failure").read_text() == line
    assert main(["--epochs", "0"], _env(channels, tmp_path)) == 2  # outside the toolkit: no file anywhere
    assert capsys.readouterr().err.count("error: bad hyperparameters") == 3


def test_rank_share_covers_every_row_once() -> None:
    index = np.arange(10)
    shares = [rank_share(index, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate([share for share, _ in shares]).tolist()) == list(range(10))
    assert all(weight == 1.0 for _, weight in shares)
    share, weight = rank_share(np.arange(1), 1, 2)  # a last batch smaller than the world: a weightless row
    assert share.tolist() == [0] and weight == 0.0


def test_distributed_environment() -> None:
    assert distributed_from_env({}) is None and distributed_from_env({"WORLD_SIZE": "1"}) is None
    found = distributed_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert found == Distributed(rank=2, world_size=4, local_rank=0) and not found.is_main
    with pytest.raises(TrainingError, match="outside WORLD_SIZE"):
        distributed_from_env({"WORLD_SIZE": "2", "RANK": "2"})


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


# --- distributed (torch DDP under torchrun) ------------------------------------------------------------------


def _torchrun(argv: list[str], env: dict[str, str], ranks: int = 2) -> subprocess.CompletedProcess[str]:
    """``model/train.py`` with ``ranks`` processes on this machine, the way the PyTorch toolkit launches it."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nnodes", "1", "--nproc_per_node", str(ranks)]
    return subprocess.run(
        [*command, str(PROJECT_ROOT / "model" / "train.py"), *argv],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e  # torchrun starts two ranks, twice
@pytest.mark.timeout(600)
def test_two_ranks_train_what_one_process_trains_and_resume_from_rank_0s_checkpoint(
    channels: Path, tmp_path: Path
) -> None:
    """The global batch is kept: each rank takes every 2nd row of the same batches and DDP averages the gradients,
    so without dropout two ranks follow one process's optimisation (up to float summation order) — also across a
    restart, where rank 0 reads the checkpoint and broadcasts it."""
    argv = [*TINY, "--dropout", "0", "--patience", "5"]
    one = run_training(
        parse_hyperparameters([*argv, "--epochs", "2"]), _paths(channels, tmp_path / "one"), log=lambda line: None
    )
    job = tmp_path / "two"
    env = {**_env(channels, job), "TRAINING_JOB_NAME": "ddp-2"}
    first = _torchrun([*argv, "--epochs", "1"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ranks 2 (batch 32 split across them)" in first.stdout
    assert [line.split()[0] for line in first.stdout.splitlines() if line.startswith("epoch=")] == ["epoch=1"]
    second = _torchrun([*argv, "--epochs", "2"], env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("resuming from checkpoint") == 1 and "after epoch 1" in second.stdout  # rank 0 only
    assert [line.split()[0] for line in second.stdout.splitlines() if line.startswith("epoch=")] == ["epoch=2"]

    two = json.loads((job / "model" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["best_epoch"] == one["best_epoch"]
    assert [entry["epoch"] for entry in two["history"]] == [1, 2]
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a, b)
    single = torch.load(tmp_path / "one" / "model" / "model.pth", weights_only=True)
    ddp = torch.load(job / "model" / "model.pth", weights_only=True)
    assert all(torch.allclose(single[key], ddp[key], atol=1e-4) for key in single)
    assert load_artifact(job / "model").version == "ddp-2"


# --- nb-lstm (the default) through the same entry point --------------------------------------------------------

NB_SMALL = [
    "--epochs", "2", "--batch_size", "16", "--embedding_dim", "8", "--hidden_dim", "8", "--learning_rate", "0.01",
    "--lstm_vocab", "60", "--lstm_len", "30", "--ngram_buckets", "2000", "--wide_batch_size", "16",
    "--wide_lr", "0.05", "--seed", "3", "--num_threads", "1",
]  # fmt: skip


def test_the_default_architecture_is_nb_lstm_trained_stage_by_stage(
    np2_channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Script mode on .npz channels of the default tokenizer: wide, deep, mix; the artifact records everything
    serving needs (tokenizer version and parameters, vocabulary, n-gram buckets, the mix)."""
    assert TrainConfig().architecture == "nb-lstm"
    assert main(NB_SMALL, _env(np2_channels, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "training nb-lstm on 192 reviews" in out and "mix: deep share" in out
    assert [EPOCH_LINE.match(line) is not None for line in out.splitlines() if line.startswith("epoch=")] == [True] * 2
    model = load_artifact(tmp_path / "model")
    info = model.info
    assert info["architecture"] == "nb-lstm" and info["ngram_buckets"] == 2000 and info["lstm_len"] == 30
    assert info["tokenizer_version"] == "words-neg-punct-2" == model.preprocessor.version
    preprocessing = json.loads((tmp_path / "model" / "preprocessing.json").read_text())
    assert preprocessing["tokenizer_params"]["negations"] == "n't -> ' not'"
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.9 and 0.0 <= metrics["mix_deep_share"] <= 1.0
    positive, negative = model.predict_texts(["great wonderful loved excellent film", "awful terrible boring film"])
    assert positive > 0.5 > negative
    weights = torch.load(tmp_path / "model" / "model.pth", weights_only=True)
    assert float(weights["deep_scale"]) == metrics["mix_deep_share"]


def test_nb_lstm_hyperparameters_are_checked_before_training(
    np2_channels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*NB_SMALL, "--mix", "most", "--ngram_orders", "4"], _env(np2_channels, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "--mix must be 'val' or a number in [0, 1]" in err and "--ngram_orders must be 1, 2 or 3" in err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.e2e  # torchrun starts two ranks
@pytest.mark.timeout(600)
def test_two_ranks_train_nb_lstm_as_one_process_does(np2_channels: Path, tmp_path: Path) -> None:
    """nb-lstm under torchrun: the wide stage on rank 0 (broadcast), the deep stage data-parallel; without dropout
    the two-rank model matches the one-process model up to float summation order."""
    argv = [*NB_SMALL, "--dropout", "0"]
    one = run_training(parse_hyperparameters(argv), _paths(np2_channels, tmp_path / "one"), log=lambda line: None)
    job = tmp_path / "two"
    done = _torchrun(argv, {**_env(np2_channels, job), "TRAINING_JOB_NAME": "nb-ddp-2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ranks 2 (wide stage on rank 0, deep stage data-parallel)" in done.stdout
    two = json.loads((job / "model" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["mix_deep_share"] == one["mix_deep_share"]
    assert abs(two["val_loss"] - one["val_loss"]) < 1e-4 and two["val_accuracy"] == one["val_accuracy"]
    single = torch.load(tmp_path / "one" / "model" / "model.pth", weights_only=True)
    ddp = torch.load(job / "model" / "model.pth", weights_only=True)
    assert all(torch.allclose(single[key], ddp[key], atol=1e-4) for key in single)
