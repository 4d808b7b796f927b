from __future__ import annotations

import pytest
import torch

from model.network import (
    ARCHITECTURES,
    LSTMClassifier,
    NBLSTMClassifier,
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


# --- nb-lstm ----------------------------------------------------------------------------------------------


def _nb(**overrides: object) -> NBLSTMClassifier:
    torch.manual_seed(0)
    settings = {"vocab_size": 50, "lstm_vocab": 30, "lstm_len": 6, "embedding_dim": 8, "hidden_dim": 6}
    network = NBLSTMClassifier(**{**settings, "ngram_buckets": 1000, **overrides}).eval()
    with torch.no_grad():
        network.wide.weight.normal_()
        network.wide.weight[0] = 0.0
        network.wide.bias.fill_(0.3)
        network.wide_scale.fill_(0.7)
        network.deep_scale.fill_(0.3)
    return network


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nb_lstm_output_is_independent_of_padding_and_batch(bidirectional: bool) -> None:
    network = _nb(bidirectional=bidirectional)
    lengths = [4, 12, 0, 9, 1]
    rows = _rows(lengths, max_len=12, vocab_size=50)
    out = network(rows)
    assert out.shape == (5,) and torch.isfinite(out).all() and returns_logits(network)
    for i, length in enumerate(lengths):  # each row alone, cut to its length, or with more padding
        alone = network(rows[i : i + 1, : max(length, 1) + 1])
        padded = network(torch.cat([rows[i : i + 1], torch.zeros(1, 20, dtype=torch.int64)], dim=1))
        assert torch.allclose(alone, out[i : i + 1], atol=1e-5) and torch.allclose(padded, alone, atol=1e-5)


def test_nb_lstm_mixes_its_paths_and_reads_only_the_lstm_window() -> None:
    network = _nb()
    rows = _rows([12, 3], max_len=12, vocab_size=50)
    wide = network.wide(rows)
    deep = network.deep(network.deep_rows(rows))
    assert torch.allclose(network(rows), 0.7 * wide + 0.3 * deep, atol=1e-6)
    cut = network.deep_rows(rows)
    assert cut.shape == (2, 7) and cut[:, 0].tolist() == [6, 3] and int(cut[:, 1:].max()) < 30
    changed = rows.clone()
    changed[0, 8:] = 2  # beyond the LSTM window: only the wide path sees it
    assert torch.equal(network.deep_rows(changed), cut) and not torch.equal(network.wide(changed), wide)


def test_nb_lstm_with_deep_share_zero_never_runs_the_lstm(monkeypatch: pytest.MonkeyPatch) -> None:
    network = _nb()
    rows = _rows([5, 2], vocab_size=50)
    with torch.no_grad():
        network.deep_scale.fill_(0.0)
    monkeypatch.setattr(network.deep, "forward", lambda x: pytest.fail("the LSTM ran"))
    assert torch.allclose(network(rows), 0.7 * network.wide(rows))
    assert network.cost_window == 1
    with torch.no_grad():
        network.deep_scale.fill_(0.5)
    assert network.cost_window == 6


def test_nb_lstm_from_model_info_and_its_state_dict() -> None:
    info = {"architecture": "nb-lstm", "vocab_size": 40, "embedding_dim": 4, "hidden_dim": 3, "lstm_vocab": 25,
            "lstm_len": 8, "bidirectional": 1, "ngram_orders": 2, "ngram_buckets": 100}  # fmt: skip
    network = build_network(info)
    assert isinstance(network, NBLSTMClassifier) and network.deep.bidirectional
    assert network.wide.weight.shape == (140, 1) and network.deep.embedding.num_embeddings == 25
    keys = set(network.state_dict())
    assert {
        "wide.weight",
        "wide.bias",
        "wide_scale",
        "deep_scale",
        "deep.embedding.weight",
        "deep.dense.weight",
    } <= keys
    with pytest.raises(ValueError, match="vocab_size must be in"):
        NBLSTMClassifier(vocab_size=(1 << 21) + 1)


def test_masked_pools_equal_pooling_each_row_over_its_own_steps() -> None:
    from model.network import masked_pools

    torch.manual_seed(3)
    out = torch.randn(5, 9, 4)
    for lengths in ([9, 9, 9, 9, 9], [9, 8, 3, 9, 1], [2, 2, 2, 2, 2]):
        max_pool, mean_pool = masked_pools(out, torch.tensor(lengths))
        for row, length in enumerate(lengths):
            assert torch.equal(max_pool[row], out[row, :length].amax(dim=0))
            assert torch.allclose(mean_pool[row], out[row, :length].mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_inference_pads_steps_to_a_bucket_without_changing_the_logits(bidirectional: bool) -> None:
    from model.network import STEP_BUCKET

    torch.manual_seed(1)
    network = PooledLSTMClassifier(vocab_size=50, embedding_dim=8, hidden_dim=6, bidirectional=bidirectional).eval()
    rows = _rows([5, STEP_BUCKET + 3, 1, STEP_BUCKET], max_len=2 * STEP_BUCKET)
    trained_path = network(rows)  # gradients on: the steps as they are
    with torch.inference_mode():
        served_path = network(rows)  # padded to 2 * STEP_BUCKET steps
    assert torch.allclose(served_path, trained_path, atol=1e-6)
