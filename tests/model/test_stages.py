"""nb-lstm's staged training on small synthetic channels: it learns, it is deterministic, every stage resumes
after a kill exactly where the uninterrupted run would be, the mix can drop the LSTM, stale checkpoints are
ignored."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.channels import Channel, read_channel
from model.network import NBLSTMClassifier
from model.stages import StagedConfig, choose_mix, train_staged

SMALL = StagedConfig(
    epochs=2,
    batch_size=16,
    embedding_dim=8,
    hidden_dim=8,
    learning_rate=0.01,
    patience=3,
    lstm_vocab=60,
    lstm_len=30,
    ngram_buckets=2000,
    wide_epochs=2,
    wide_batch_size=16,
    wide_lr=0.05,
    seed=3,
)


class Killed(Exception):
    """Stands in for kill -9 at a given log line."""


@pytest.fixture(scope="module")
def data(np2_channels: Path) -> tuple[Channel, Channel]:
    return read_channel(np2_channels / "train", "train"), read_channel(np2_channels / "validation", "validation")


def _network(config: StagedConfig) -> NBLSTMClassifier:
    torch.manual_seed(config.seed)
    return NBLSTMClassifier(
        60,
        lstm_vocab=config.lstm_vocab,
        lstm_len=config.lstm_len,
        embedding_dim=config.embedding_dim,
        hidden_dim=config.hidden_dim,
        ngram_buckets=config.ngram_buckets,
    )


def _train(config: StagedConfig, data, checkpoints: Path, log=lambda line: None) -> tuple[NBLSTMClassifier, dict]:
    network = _network(config)
    metrics = train_staged(network, config, data[0], data[1], checkpoints, log=log)
    return network, metrics


def _kill_at(prefix: str, lines: list[str]):
    def log(line: str) -> None:
        lines.append(line)
        if line.startswith(prefix):
            raise Killed(line)

    return log


def _same(a: NBLSTMClassifier, b: NBLSTMClassifier) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory: pytest.TempPathFactory) -> tuple[NBLSTMClassifier, dict]:
    return _train(SMALL, data, tmp_path_factory.mktemp("straight"))


def test_staged_training_learns_and_mixes(straight, data) -> None:
    network, metrics = straight
    assert metrics["val_accuracy"] >= 0.9 and metrics["val_accuracy_wide"] >= 0.9
    assert 0.0 <= metrics["mix_deep_share"] <= 1.0 and len(metrics["mix_grid"]) == 21
    assert float(network.deep_scale) == metrics["mix_deep_share"]
    assert float(network.wide_scale) == pytest.approx(1 - metrics["mix_deep_share"])
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2] and metrics["epochs_run"] == 2
    assert metrics["wide"]["best_epoch"] in (1, 2) and metrics["deep"]["best_epoch"] == metrics["best_epoch"]
    network.eval()
    with torch.inference_mode():
        logits = network(torch.from_numpy(data[1].rows()))
    assert float(((logits > 0).numpy() == data[1].labels).mean()) == pytest.approx(metrics["val_accuracy"])


def test_same_seed_same_model_other_seed_other_model(straight, data, tmp_path: Path) -> None:
    again, _ = _train(SMALL, data, tmp_path / "again")
    assert _same(straight[0], again)
    other, _ = _train(replace(SMALL, seed=4), data, tmp_path / "other")
    assert not _same(straight[0], other)


def test_a_kill_in_the_wide_stage_resumes_at_its_next_epoch(straight, data, tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(Killed):
        _train(SMALL, data, tmp_path, log=_kill_at("wide epoch 2", lines))
    assert (tmp_path / "wide.pth").is_file() and not (tmp_path / "deep.pth").exists()
    lines.clear()
    resumed, _ = _train(SMALL, data, tmp_path, log=lines.append)
    assert "resuming the wide stage after epoch 1" in lines
    assert [line.split(":")[0] for line in lines if line.startswith("wide epoch")] == ["wide epoch 2"]
    assert _same(resumed, straight[0])


def test_a_kill_in_the_deep_stage_resumes_at_its_next_epoch(straight, data, tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(Killed):
        _train(SMALL, data, tmp_path, log=_kill_at("epoch=2", lines))
    lines.clear()
    resumed, metrics = _train(SMALL, data, tmp_path, log=lines.append)
    assert any(line.startswith("wide stage restored from") for line in lines)
    assert "resuming the deep stage after epoch 1" in lines
    assert [line.split()[0] for line in lines if line.startswith("epoch=")] == ["epoch=2"]
    assert not any(line.startswith("wide epoch") for line in lines)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert _same(resumed, straight[0])


def test_checkpoints_of_other_settings_or_data_are_not_resumed(straight, data, tmp_path: Path) -> None:
    _train(SMALL, data, tmp_path)
    lines: list[str] = []
    _train(replace(SMALL, hidden_dim=6), data, tmp_path, log=lines.append)  # the deep stage's key changed
    assert any(line.startswith("wide stage restored from") for line in lines)
    assert any("deep.pth: written with other settings or data" in line for line in lines)
    lines.clear()
    fewer = (data[0].take(np.arange(100)), data[1])
    _train(SMALL, fewer, tmp_path, log=lines.append)
    assert any("wide.pth: written with other settings or data" in line for line in lines)


def test_mix_zero_skips_the_lstm_stage(data, tmp_path: Path) -> None:
    lines: list[str] = []
    network, metrics = _train(replace(SMALL, mix="0"), data, tmp_path, log=lines.append)
    assert any(line.startswith("deep stage skipped") for line in lines)
    assert not (tmp_path / "deep.pth").exists() and metrics["deep"] is None
    assert float(network.deep_scale) == 0.0 and float(network.wide_scale) == 1.0
    assert metrics["history"] == metrics["wide"]["history"] and metrics["val_accuracy"] >= 0.9


def test_choose_mix_minimises_validation_log_loss() -> None:
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    wide = torch.tensor([2.0, -2.0, -0.5, -1.0])
    deep = torch.tensor([1.0, -1.0, 3.0, -3.0])
    share, grid = choose_mix(wide, deep, labels, None)
    assert 0 < share < 1 and grid[int(round(share * 20))]["val_loss"] == min(entry["val_loss"] for entry in grid)
    assert choose_mix(wide, deep, labels, 0.25) == (0.25, [])
    assert choose_mix(wide, None, labels, None) == (0.0, [])


def test_config_problems_are_named() -> None:
    assert SMALL.problems() == []
    bad = replace(SMALL, ngram_orders=4, mix="most", lstm_len=0, wide_lr=-1.0, bidirectional=2)
    problems = " ".join(bad.problems())
    expected = (
        "--ngram_orders must be 1, 2 or 3",
        "--mix must be 'val' or a number in [0, 1]",
        "--lstm_len must be at least 1",
        "--wide_lr must be a positive number",
        "--bidirectional must be 0 or 1",
    )
    for text in expected:
        assert text in problems
    assert replace(SMALL, mix="0.3").fixed_mix() == 0.3 and replace(SMALL, mix="1.5").problems()
