from __future__ import annotations

import pytest
import torch

from model.network import (
    ARCHITECTURES,
    LSTMClassifier,
    PooledLSTMClassifier,
    build_network,
    returns_logits,
    reverse_index,
)


def _rows(lengths: list[int], max_len: int = 12, vocab_size: int = 50, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.zeros(len(lengths), max_len + 1, dtype=torch.int64)
    for i, length in enumerate(lengths):
        rows[i, 0] = length
        rows[i, 1 : length + 1] = torch.randint(2, vocab_size, (length,), generator=generator)
    return rows


def test_reference_network_returns_one_probability_per_row() -> None:
    torch.manual_seed(0)
    network = LSTMClassifier(embedding_dim=32, hidden_dim=100, vocab_size=5000).eval()
    out = network(_rows([3, 12, 1, 7], vocab_size=5000))
    assert out.shape == (4,)
    assert ((out > 0) & (out < 1)).all()
    assert not returns_logits(network)


def test_reference_network_reads_the_last_real_time_step() -> None:
    torch.manual_seed(0)
    network = LSTMClassifier(8, 6, 50).eval()
    rows = _rows([5])
    longer = rows.clone()
    longer[0, 6:9] = torch.tensor([7, 8, 9])  # tokens after the stated length are ignored
    assert torch.allclose(network(rows), network(longer))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_pooled_network_returns_logits_independent_of_padding_and_batch(bidirectional: bool) -> None:
    torch.manual_seed(0)
    network = PooledLSTMClassifier(vocab_size=50, embedding_dim=8, hidden_dim=6, bidirectional=bidirectional).eval()
    rows = _rows([4, 12, 1, 9])
    out = network(rows)
    assert out.shape == (4,)
    assert returns_logits(network)
    for i, length in enumerate([4, 12, 1, 9]):  # each row alone, without trailing padding
        assert torch.allclose(network(rows[i : i + 1, : length + 1]), out[i : i + 1], atol=1e-6)


def test_reverse_index_flips_each_row_within_its_length() -> None:
    index = reverse_index(torch.tensor([3, 1, 5]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]


def test_pooled_network_accepts_empty_reviews() -> None:
    network = PooledLSTMClassifier(vocab_size=50, embedding_dim=4, hidden_dim=3).eval()
    out = network(_rows([0, 2]))
    assert torch.isfinite(out).all()


def test_build_network_for_every_architecture() -> None:
    info = {"vocab_size": 30, "embedding_dim": 4, "hidden_dim": 3}
    for name in ARCHITECTURES:
        network = build_network({**info, "architecture": name}).eval()
        assert network(_rows([2, 5], vocab_size=30)).shape == (2,)
    assert build_network({**info, "architecture": "bilstm-pool"}).bidirectional
    assert not build_network({**info, "architecture": "lstm-pool"}).bidirectional


def test_build_network_rejects_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        build_network({"architecture": "transformer", "vocab_size": 30, "embedding_dim": 4, "hidden_dim": 3})
