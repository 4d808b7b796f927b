"""The sentiment networks. Every variant reads the same int64 rows ``(batch, 1 + max_len)``: ``length, ids…``.

- ``reference``: the course notebook's ``LSTMClassifier`` (embedding → LSTM → linear on the last real time
  step → sigmoid), kept to measure against. It runs over every padded step and returns probabilities.
- ``lstm-pool`` / ``bilstm-pool``: padding-aware (bi)LSTM over length-bucketed batches (no work on padding),
  max- and mean-pooling over time concatenated, dropout, one linear layer returning a logit (trained with
  ``BCEWithLogitsLoss``).

``Network.returns_logits`` tells training which loss to use and inference whether to apply a sigmoid;
``Network.bucketed`` tells training whether batching by length helps (it does for packed networks).
Only ``torch`` and the standard library are imported: this module ships inside ``model.tar.gz``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


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
        out, _ = self.lstm(embeds)
        if self.lstm_reverse is not None:
            index = reverse_index(lengths, steps).unsqueeze(-1)
            backward, _ = self.lstm_reverse(embeds.gather(1, index.expand_as(embeds)))
            out = torch.cat([out, backward.gather(1, index.expand_as(backward))], dim=-1)
        mask = (torch.arange(steps, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        max_pool = out.masked_fill(~mask, float("-inf")).amax(dim=1)
        mean_pool = out.masked_fill(~mask, 0.0).sum(dim=1) / lengths.unsqueeze(-1).to(out.dtype)
        pooled = self.dropout(torch.cat([max_pool, mean_pool], dim=1))
        return self.dense(pooled).squeeze(-1)


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
}
DEFAULT_ARCHITECTURE = "bilstm-pool"


def build_network(model_info: dict[str, Any]) -> nn.Module:
    """A fresh network for ``model_info`` (architecture, vocab_size, embedding_dim, hidden_dim, …)."""
    name = model_info.get("architecture", DEFAULT_ARCHITECTURE)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](model_info)


def returns_logits(network: nn.Module) -> bool:
    """Whether ``network`` outputs logits (else probabilities)."""
    return bool(getattr(network, "returns_logits", False))
