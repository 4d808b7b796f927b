"""The sentiment networks. Every variant reads the same int64 rows ``(batch, 1 + max_len)``: ``length, ids…``.

- ``reference``: the course notebook's ``LSTMClassifier`` (embedding → LSTM → linear on the last real time
  step → sigmoid), kept to measure against. It runs over every padded step and returns probabilities.
- ``lstm-pool`` / ``bilstm-pool``: padding-aware (bi)LSTM over length-bucketed batches (no work on padding),
  max- and mean-pooling over time concatenated, dropout, one linear layer returning a logit (trained with
  ``BCEWithLogitsLoss``).

- ``nb-lstm`` (the default): a wide NBSVM-style n-gram bag over the **whole** review beside a pooled LSTM over its
  first ``lstm_len`` tokens, the two logits mixed by trained scales (:class:`NBLSTMClassifier`; trained stage by
  stage by :mod:`model.stages`). It reads rows holding whole reviews (``max_len`` 3,000 is only a safety cap).

``Network.returns_logits`` tells training which loss to use and inference whether to apply a sigmoid;
``Network.bucketed`` tells training whether batching by length helps (it does for packed networks);
``Network.cost_window`` (when present) is how many leading tokens of a row cost compute in proportion to their
number, which inference uses to size its batches.
Only ``torch``, ``numpy`` and the standard library are imported: this module ships inside ``model.tar.gz``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class LSTMClassifier(nn.Module):
    """The reference network of the course notebook (returns P(positive))."""

    returns_logits = False
    bucketed = False

    def __init__(self, embedding_dim: int = 32, hidden_dim: int = 100, vocab_size: int = 5000) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)
        self.dense = nn.Linear(in_features=hidden_dim, out_features=1)
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.t()
        lengths = x[0, :].clamp(min=1)
        reviews = x[1:, :]
        embeds = self.embedding(reviews)
        lstm_out, _ = self.lstm(embeds)
        out = self.dense(lstm_out)
        out = out[lengths - 1, torch.arange(len(lengths))]
        return self.sig(out.squeeze(-1))


def reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(batch, steps)`` positions that reverse each row's first ``length`` steps and leave padding in place.

    Gathering with it twice is the identity, so it maps a backward LSTM's outputs back to their positions.
    """
    positions = torch.arange(steps, device=lengths.device).expand(len(lengths), steps)
    return torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)


STEP_BUCKET = 32  # inference pads a small batch's LSTM steps to a multiple of this…
STEP_BUCKET_ROWS = 8  # …when it has at most this many rows (larger batches amortize building their primitive)


def _pad_to_step_bucket(embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``embeds`` ``(B, T, E)`` with zero steps appended up to a multiple of :data:`STEP_BUCKET`, and the new T.

    oneDNN builds (and caches) an LSTM primitive per input shape, and building one costs more than running it
    (one review of 100–200 steps: 1.44 ms the first time its length is seen, 0.77 ms after); with the length
    rounded up, 8 shapes cover every review up to 256 steps, and a worker holds 28 MiB of them instead of 60 after
    1,000 single reviews. Large batches are left as they are: padding them cost more than the shapes they
    saved (5,000 reviews in 256-review requests: 1.29 s CPU unpadded, 1.37–1.51 s padded). Trailing steps change
    nothing: the LSTM is causal
    (outputs at the real steps are bitwise the same), the reverse LSTM reads each row reversed within its
    length, and the pools mask every step past a row's length."""
    steps = embeds.shape[1]
    padded = -(-steps // STEP_BUCKET) * STEP_BUCKET
    if padded == steps:
        return embeds, steps
    return F.pad(embeds, (0, 0, 0, padded - steps)), padded


def masked_pools(out: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and mean of ``out`` ``(B, T, H)`` over each row's first ``lengths`` (≥ 1) steps.

    Every row has the steps before the shortest row's end, so only the steps after it are masked: a length-sorted
    batch has a short tail, and masking the whole ``(B, T, H)`` tensor cost 12x the pooling itself on one core
    (7.0 ms against 0.57 ms for 64 × 256 × 64)."""
    shortest = int(lengths.min())
    head = out[:, :shortest]
    max_pool, total = head.amax(dim=1), head.sum(dim=1)
    if shortest < out.shape[1]:
        tail = out[:, shortest:]
        steps = torch.arange(shortest, out.shape[1], device=out.device)
        padded = (steps[None, :] >= lengths[:, None]).unsqueeze(-1)
        max_pool = torch.maximum(max_pool, tail.masked_fill(padded, float("-inf")).amax(dim=1))
        total = total + tail.masked_fill(padded, 0.0).sum(dim=1)
    return max_pool, total / lengths.unsqueeze(-1).to(out.dtype)


class PooledLSTMClassifier(nn.Module):
    """(Bi)LSTM with max- and mean-pooling over the real time steps; returns a logit per row.

    Padding never reaches a real step: the batch is cut to its longest review, the forward LSTM is causal, the
    backward LSTM reads each review reversed within its own length, and pooling masks padded steps. (This is
    what ``pack_padded_sequence`` would do, but packed LSTMs on CPU backpropagate in time quadratic in the
    sequence length — measured 85 % of a training step in ``fill_`` with torch 2.13 — while the padded cuDNN/
    oneDNN path is linear; length bucketing in training keeps the padding small.)
    """

    returns_logits = True
    bucketed = True

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 64,
        hidden_dim: int = 128,
        bidirectional: bool = True,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.lstm_reverse = nn.LSTM(embedding_dim, hidden_dim, batch_first=True) if bidirectional else None
        features = hidden_dim * (2 if bidirectional else 1)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = x[:, 0].clamp(min=1, max=x.shape[1] - 1)
        steps = int(lengths.max())
        embeds = self.embedding_dropout(self.embedding(x[:, 1 : steps + 1]))
        if not torch.is_grad_enabled() and len(embeds) <= STEP_BUCKET_ROWS:
            embeds, steps = _pad_to_step_bucket(embeds)
        out, _ = self.lstm(embeds)
        if self.lstm_reverse is not None:
            index = reverse_index(lengths, steps).unsqueeze(-1)
            backward, _ = self.lstm_reverse(embeds.gather(1, index.expand_as(embeds)))
            out = torch.cat([out, backward.gather(1, index.expand_as(backward))], dim=-1)
        max_pool, mean_pool = masked_pools(out, lengths)
        pooled = self.dropout(torch.cat([max_pool, mean_pool], dim=1))
        return self.dense(pooled).squeeze(-1)


# --- nb-lstm ----------------------------------------------------------------------------------------------

HASH_MULTIPLIERS = (1_000_003, 1_700_021, 910_009)  # one per position in an n-gram
HASH_ORDER_SALT = 7_919
MAX_VOCAB = 1 << 21  # ids below 2^21: Σ id·multiplier stays far below 2^63
MAX_NGRAM_ORDER = len(HASH_MULTIPLIERS)


def ngram_feature_count(vocab_size: int, orders: int, buckets: int) -> int:
    """Size of the feature space: the unigram ids, then ``buckets // (orders - 1)`` hash slots per higher order."""
    per_order = buckets // (orders - 1) if orders > 1 else 0
    return vocab_size + per_order * (orders - 1)


def ngram_features(
    ids: torch.Tensor, lengths: torch.Tensor, vocab_size: int, orders: int, buckets: int
) -> torch.Tensor:
    """``(B, F)`` int64 feature ids of word-id rows ``ids`` ``(B, L)`` with real ``lengths``.

    Unigrams are the word ids themselves (< ``vocab_size``); an n-gram of order 2…``orders`` hashes into its own
    block of ``buckets // (orders - 1)`` slots after the unigrams, by integer arithmetic only
    (``(Σ_k id_k · M_k + 7919 n) mod slots``: the same in every process, no Python ``hash()``). Each row's features
    are sorted and each distinct feature appears once (a binarized bag); padding and repeats are 0, the feature
    that always weighs 0. On CPU the same integer arithmetic runs in numpy (a few µs per operation instead of
    torch's dispatch, and numpy's SIMD sort of int32, ~30x ``torch.sort`` of int64 on one core): identical ids.
    """
    if not 1 <= orders <= MAX_NGRAM_ORDER:
        raise ValueError(f"ngram orders must be in [1, {MAX_NGRAM_ORDER}], got {orders}")
    if ids.device.type == "cpu":
        return torch.from_numpy(_ngram_features_numpy(ids.numpy(), lengths.numpy(), vocab_size, orders, buckets))
    return _ngram_features_torch(ids, lengths, vocab_size, orders, buckets)


def _ngram_features_torch(
    ids: torch.Tensor, lengths: torch.Tensor, vocab_size: int, orders: int, buckets: int
) -> torch.Tensor:
    """:func:`ngram_features` in torch ops (any device)."""
    ids = ids.masked_fill(ids >= vocab_size, 1)
    steps = ids.shape[1]
    positions = torch.arange(steps, device=ids.device)[None, :]
    parts = [ids.masked_fill(positions >= lengths[:, None], 0)]
    per_order = buckets // (orders - 1) if orders > 1 else 0
    for n in range(2, orders + 1):
        if steps < n:
            break
        width = steps - n + 1
        key = ids[:, :width] * HASH_MULTIPLIERS[0]
        for k in range(1, n):
            key = key + ids[:, k : k + width] * HASH_MULTIPLIERS[k]
        hashed = (key + HASH_ORDER_SALT * n) % per_order + (vocab_size + (n - 2) * per_order)
        parts.append(hashed.masked_fill(positions[:, :width] + n > lengths[:, None], 0))
    features, _ = torch.cat(parts, dim=1).sort(dim=1)
    repeated = torch.zeros_like(features, dtype=torch.bool)
    repeated[:, 1:] = features[:, 1:] == features[:, :-1]
    return features.masked_fill(repeated, 0)


def _ngram_features_numpy(
    ids: np.ndarray, lengths: np.ndarray, vocab_size: int, orders: int, buckets: int
) -> np.ndarray:
    """:func:`ngram_features` in numpy: int64 arithmetic, feature ids (< 2^31) kept as int32 until the end."""
    batch, steps = ids.shape
    ids = np.where(ids >= vocab_size, 1, ids).astype(np.int64, copy=False)
    lengths = lengths.astype(np.int64, copy=False)[:, None]
    positions = np.arange(steps)[None, :]
    per_order = buckets // (orders - 1) if orders > 1 else 0
    widths = [steps] + [steps - n + 1 for n in range(2, orders + 1) if steps >= n]
    features = np.empty((batch, sum(widths)), dtype=np.int32)
    features[:, :steps] = np.where(positions < lengths, ids, 0)
    offset = steps
    for n, width in zip(range(2, orders + 1), widths[1:], strict=False):
        key = ids[:, :width] * HASH_MULTIPLIERS[0]
        for k in range(1, n):
            key += ids[:, k : k + width] * HASH_MULTIPLIERS[k]
        key += HASH_ORDER_SALT * n
        np.remainder(key, per_order, out=key)
        key += vocab_size + (n - 2) * per_order
        key[positions[:, :width] + n > lengths] = 0
        features[:, offset : offset + width] = key
        offset += width
    features.sort(axis=1)
    features[:, 1:][features[:, 1:] == features[:, :-1]] = 0
    return features.astype(np.int64)


class NgramBag(nn.Module):
    """The wide path: one weight per distinct uni/bi/trigram of the row, summed, plus a bias (a logit).

    Training (:mod:`model.wide`) learns the NBSVM solution and stores it folded here (``weight = r · r_scale · w``
    with ``r`` the naive-Bayes log-count ratios), so serving needs no ratio table. Feature 0 (padding and repeats)
    has weight 0.
    """

    def __init__(self, vocab_size: int, orders: int = 3, buckets: int = 1 << 22) -> None:
        super().__init__()
        if not 3 <= vocab_size <= MAX_VOCAB:
            raise ValueError(f"vocab_size must be in [3, {MAX_VOCAB}] for the n-gram path, got {vocab_size}")
        if not 1 <= orders <= MAX_NGRAM_ORDER:
            raise ValueError(f"ngram_orders must be in [1, {MAX_NGRAM_ORDER}], got {orders}")
        self.vocab_size, self.orders, self.buckets = vocab_size, orders, buckets
        self.weight = nn.Parameter(torch.zeros(ngram_feature_count(vocab_size, orders, buckets), 1))
        self.bias = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature ids of rows ``x`` ``(B, 1 + L)`` (cut to the longest real row first)."""
        if x.shape[1] < 2:
            x = torch.cat([x, torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        lengths = x[:, 0].clamp(min=0, max=x.shape[1] - 1)
        steps = max(1, int(lengths.max()) if len(lengths) else 1)  # an all-empty batch: one column of padding
        return ngram_features(x[:, 1 : steps + 1], lengths, self.vocab_size, self.orders, self.buckets)

    def logit_of(self, features: torch.Tensor) -> torch.Tensor:
        # weight[0] is 0 (padding and repeats point there): no padding_idx, whose kernel is ~25x slower on CPU
        return F.embedding_bag(features, self.weight, mode="sum").squeeze(-1) + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_of(self.features(x))


class NBLSTMClassifier(nn.Module):
    """``nb-lstm``: ``wide_scale · NgramBag(whole review) + deep_scale · pooled LSTM(first lstm_len tokens)``.

    The deep path is a :class:`PooledLSTMClassifier` over word ids below ``lstm_vocab`` (the rest read as the
    infrequent id 1). Both scales are buffers set by training (the mix chosen on the validation channel); with
    ``deep_scale`` 0 inference skips the LSTM entirely. Returns a logit per row, independent of padding.
    """

    returns_logits = True
    bucketed = True

    def __init__(
        self,
        vocab_size: int,
        lstm_vocab: int = 20_000,
        lstm_len: int = 256,
        embedding_dim: int = 64,
        hidden_dim: int = 64,
        bidirectional: bool = False,
        dropout: float = 0.3,
        ngram_orders: int = 3,
        ngram_buckets: int = 1 << 22,
    ) -> None:
        super().__init__()
        if lstm_len < 1:
            raise ValueError(f"lstm_len must be at least 1, got {lstm_len}")
        self.vocab_size, self.lstm_vocab, self.lstm_len = vocab_size, min(lstm_vocab, vocab_size), lstm_len
        self.wide = NgramBag(vocab_size, ngram_orders, ngram_buckets)
        self.deep = PooledLSTMClassifier(self.lstm_vocab, embedding_dim, hidden_dim, bidirectional, dropout)
        self.register_buffer("wide_scale", torch.ones(()))
        self.register_buffer("deep_scale", torch.ones(()))

    @property
    def uses_deep(self) -> bool:
        return float(self.deep_scale) != 0.0

    @property
    def cost_window(self) -> int:
        """How many leading tokens of a row cost LSTM steps: ``lstm_len``, or 1 for a wide-only mix (the n-gram
        path costs little per token, so batches are then limited by their number of rows)."""
        return self.lstm_len if self.uses_deep else 1

    def deep_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The deep path's input: rows cut to their first ``lstm_len`` tokens, ids ≥ ``lstm_vocab`` → 1."""
        lengths = x[:, 0].clamp(min=0, max=min(self.lstm_len, x.shape[1] - 1))
        steps = max(1, int(lengths.max()) if len(lengths) else 1)
        ids = x[:, 1 : steps + 1]
        return torch.cat([lengths[:, None], ids.masked_fill(ids >= self.lstm_vocab, 1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = self.wide_scale * self.wide(x)
        if not self.uses_deep:  # a wide-only mix never runs the LSTM
            return wide
        return wide + self.deep_scale * self.deep(self.deep_rows(x))


def _nb_lstm(info: dict[str, Any]) -> nn.Module:
    return NBLSTMClassifier(
        vocab_size=int(info["vocab_size"]),
        lstm_vocab=int(info.get("lstm_vocab", 20_000)),
        lstm_len=int(info.get("lstm_len", 256)),
        embedding_dim=int(info["embedding_dim"]),
        hidden_dim=int(info["hidden_dim"]),
        bidirectional=bool(int(info.get("bidirectional", 0))),
        dropout=float(info.get("dropout", 0.3)),
        ngram_orders=int(info.get("ngram_orders", 3)),
        ngram_buckets=int(info.get("ngram_buckets", 1 << 22)),
    )


def _reference(info: dict[str, Any]) -> nn.Module:
    return LSTMClassifier(int(info["embedding_dim"]), int(info["hidden_dim"]), int(info["vocab_size"]))


def _pooled(bidirectional: bool) -> Callable[[dict[str, Any]], nn.Module]:
    def build(info: dict[str, Any]) -> nn.Module:
        return PooledLSTMClassifier(
            vocab_size=int(info["vocab_size"]),
            embedding_dim=int(info["embedding_dim"]),
            hidden_dim=int(info["hidden_dim"]),
            bidirectional=bidirectional,
            dropout=float(info.get("dropout", 0.3)),
        )

    return build


ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "reference": _reference,
    "lstm-pool": _pooled(bidirectional=False),
    "bilstm-pool": _pooled(bidirectional=True),
    "nb-lstm": _nb_lstm,
}
# Networks trained stage by stage (wide, deep, mix) by model.stages instead of model.train's one loop.
STAGED_ARCHITECTURES = frozenset({"nb-lstm"})
DEFAULT_ARCHITECTURE = "nb-lstm"


def build_network(model_info: dict[str, Any]) -> nn.Module:
    """A fresh network for ``model_info`` (architecture, vocab_size, embedding_dim, hidden_dim, …)."""
    name = model_info.get("architecture", "bilstm-pool")  # model_info.json always names it; older defaults did not
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](model_info)


def returns_logits(network: nn.Module) -> bool:
    """Whether ``network`` outputs logits (else probabilities)."""
    return bool(getattr(network, "returns_logits", False))
