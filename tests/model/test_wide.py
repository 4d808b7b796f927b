"""The wide path: n-gram hashing (integer arithmetic, deterministic across processes), feature bags, NB ratios,
and the NBSVM training stage with its per-epoch resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.channels import Channel
from model.network import (
    HASH_MULTIPLIERS,
    HASH_ORDER_SALT,
    NgramBag,
    _ngram_features_torch,
    ngram_feature_count,
    ngram_features,
)
from model.wide import FeatureBags, WideSettings, nb_ratios, train_wide

VOCAB, BUCKETS = 50, 1000


def _hashed(ngram: tuple[int, ...], vocab: int = VOCAB, buckets: int = BUCKETS, orders: int = 3) -> int:
    per_order = buckets // (orders - 1)
    n = len(ngram)
    key = sum(i * m for i, m in zip(ngram, HASH_MULTIPLIERS, strict=False)) + HASH_ORDER_SALT * n
    return key % per_order + vocab + (n - 2) * per_order


def test_features_are_the_distinct_uni_bi_and_trigrams_hashed_by_integer_arithmetic() -> None:
    ids = torch.tensor([[4, 7, 4, 7, 0, 0], [9, 60, 3, 0, 0, 0]])
    lengths = torch.tensor([4, 3])
    features = ngram_features(ids, lengths, VOCAB, 3, BUCKETS)
    assert features.dtype == torch.int64
    first = {4, 7, _hashed((4, 7)), _hashed((7, 4)), _hashed((4, 7, 4)), _hashed((7, 4, 7))}
    assert set(features[0].tolist()) - {0} == first  # "4 7" twice: counted once
    assert sorted(features[0][features[0] > 0].tolist()) == features[0][features[0] > 0].tolist()
    # an id beyond the vocabulary reads as the infrequent id 1
    second = {9, 1, 3, _hashed((9, 1)), _hashed((1, 3)), _hashed((9, 1, 3))}
    assert set(features[1].tolist()) - {0} == second
    assert ngram_feature_count(VOCAB, 3, BUCKETS) == VOCAB + BUCKETS
    assert ngram_feature_count(VOCAB, 1, BUCKETS) == VOCAB
    unigrams = ngram_features(ids, lengths, VOCAB, 1, BUCKETS)
    assert set(unigrams[0].tolist()) - {0} == {4, 7}


def test_the_numpy_path_on_cpu_gives_the_torch_path_s_ids() -> None:
    """CPU rows take the numpy implementation; other devices the torch one: the same ids, dtype and shape."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        batch, steps, vocab = int(rng.integers(1, 30)), int(rng.integers(0, 50)), int(rng.integers(3, 70_000))
        ids = torch.from_numpy(rng.integers(0, vocab + 300, size=(batch, steps)))
        lengths = torch.from_numpy(rng.integers(0, steps + 1, size=batch))
        for orders in (1, 2, 3):
            fast = ngram_features(ids, lengths, vocab, orders, 1 << 22)
            reference = _ngram_features_torch(ids, lengths, vocab, orders, 1 << 22)
            assert fast.dtype == reference.dtype == torch.int64
            assert torch.equal(fast, reference)
    # a non-contiguous slice, as NgramBag.features passes it
    rows = torch.from_numpy(rng.integers(0, 900, size=(4, 12)))
    lengths = torch.tensor([11, 3, 0, 7])
    assert torch.equal(
        ngram_features(rows[:, 1:], lengths, 800, 3, 4096), _ngram_features_torch(rows[:, 1:], lengths, 800, 3, 4096)
    )


def test_hashing_is_the_same_in_another_process_with_another_hash_seed() -> None:
    script = (
        "import torch\n"
        "from model.network import ngram_features\n"
        "ids = torch.arange(2, 42).reshape(2, 20) * 977 % 49999\n"
        "print(ngram_features(ids, torch.tensor([20, 13]), 50000, 3, 1 << 22).sum(dim=1).tolist())\n"
    )
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    ids = torch.arange(2, 42).reshape(2, 20) * 977 % 49999
    assert outputs == {f"{ngram_features(ids, torch.tensor([20, 13]), 50000, 3, 1 << 22).sum(dim=1).tolist()}\n"}


def test_padding_and_row_width_do_not_change_the_features() -> None:
    bag = NgramBag(VOCAB, 3, BUCKETS)
    rows = torch.tensor([[3, 5, 6, 7, 0, 0, 0], [1, 9, 0, 0, 0, 0, 0]])
    narrow = torch.tensor([[3, 5, 6, 7], [1, 9, 0, 0]])
    wide, cut = bag.features(rows), bag.features(narrow)
    for a, b in zip(wide, cut, strict=True):
        assert set(a.tolist()) == set(b.tolist())
    garbage = rows.clone()
    garbage[0, 5:] = 8  # ids after the stated length are ignored
    assert torch.equal(bag.features(garbage), wide)


def test_feature_bags_hold_each_reviews_features_in_review_order() -> None:
    channel = Channel.from_sequences([[2, 3, 4, 5], [], [7], [2, 3, 2, 3, 2, 3]], [1, 0, 1, 0])
    bag = NgramBag(VOCAB, 3, BUCKETS)
    bags = FeatureBags.of(bag, channel, batch=2)
    for i in range(len(channel)):
        alone = bag.features(torch.from_numpy(channel.rows([i])))[0]
        assert bags.review(i).tolist() == sorted(set(alone.tolist()) - {0})
    batch = bags.batch(np.array([1, 3]))
    assert batch.shape == (2, bags.counts[3]) and batch[0].tolist() == [0] * bags.counts[3]


def test_nb_ratios_are_log_count_ratios_with_smoothing() -> None:
    bags = FeatureBags(
        flat=np.array([2, 3, 2, 4, 3], dtype=np.int64),
        starts=np.array([0, 2, 4]),
        counts=np.array([2, 2, 1]),
    )
    labels = np.array([1, 1, 0])  # positives hold {2, 3} and {2, 4}; the negative {3}
    ratios = nb_ratios(bags, labels, size=6, alpha=1.0).double()
    p = np.array([1, 1, 3, 2, 2, 1], dtype=np.float64)  # α + positive counts
    q = np.array([1, 1, 1, 2, 1, 1], dtype=np.float64)  # α + negative counts
    expected = np.log(p / p.sum()) - np.log(q / q.sum())
    expected[0] = 0.0
    np.testing.assert_allclose(ratios.numpy(), expected, rtol=1e-6)
    assert ratios[2] > 0 > ratios[3] - ratios[4]  # "2" is positive evidence; "3" leans negative against "4"


def _separable(n: int, seed: int) -> Channel:
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.integers(10, VOCAB, size=int(rng.integers(5, 15))))
        words.insert(int(rng.integers(0, len(words))), 2 if label else 3)  # the sentiment word
        sequences.append(words)
        labels.append(label)
    return Channel.from_sequences(sequences, labels)


@pytest.fixture(scope="module")
def separable() -> tuple[Channel, Channel]:
    return _separable(300, 0), _separable(80, 1)


def test_train_wide_learns_and_folds_the_weights(separable: tuple[Channel, Channel]) -> None:
    train, validation = separable
    bag = NgramBag(VOCAB, 3, BUCKETS)
    bags, val_bags = FeatureBags.of(bag, train), FeatureBags.of(bag, validation)
    metrics = train_wide(
        bag, WideSettings(epochs=3, lr=0.05), bags, train.labels, val_bags, validation.labels, log=print
    )
    assert metrics["val_accuracy"] >= 0.95 and [e["epoch"] for e in metrics["history"]] == [1, 2, 3]
    assert bag.weight[0].item() == 0.0 and bag.weight[2].item() > 0 > bag.weight[3].item()
    with torch.inference_mode():
        logits = bag(torch.from_numpy(validation.rows()))
    assert float(((logits > 0).numpy() == validation.labels).mean()) == metrics["val_accuracy"]


def test_train_wide_resumes_after_an_epoch_exactly(separable: tuple[Channel, Channel]) -> None:
    train, validation = separable
    results = {}
    for name, first_epochs in (("straight", 3), ("interrupted", 1)):
        torch.manual_seed(0)
        bag = NgramBag(VOCAB, 3, BUCKETS)
        bags, val_bags = FeatureBags.of(bag, train), FeatureBags.of(bag, validation)
        saved: list = []
        train_wide(bag, WideSettings(epochs=first_epochs), bags, train.labels, val_bags, validation.labels,
                   log=lambda line: None, save=saved.append)  # fmt: skip
        if name == "interrupted":
            bag = NgramBag(VOCAB, 3, BUCKETS)
            lines: list[str] = []
            train_wide(bag, WideSettings(epochs=3), bags, train.labels, val_bags, validation.labels,
                       log=lines.append, resume=saved[-1])  # fmt: skip
            assert lines[0] == "resuming the wide stage after epoch 1"
            assert [line.split(":")[0] for line in lines[1:]] == ["wide epoch 2", "wide epoch 3"]
        results[name] = bag.weight.detach().clone()
    assert torch.equal(results["straight"], results["interrupted"])
