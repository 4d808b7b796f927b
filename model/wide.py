"""Training the wide path of ``nb-lstm``: NBSVM (naive-Bayes-scaled logistic regression) learned in PyTorch.

1. :class:`FeatureBags` — every review's distinct n-gram feature ids, computed once with the network's own
   :meth:`model.network.NgramBag.features` (so training sees exactly what serving computes), stored ragged.
2. :func:`nb_ratios` — the naive-Bayes log-count ratios ``r = log(p/‖p‖₁) − log(q/‖q‖₁)``, ``p``/``q`` = α + the
   number of positive/negative reviews holding the feature, from the **train channel only**.
3. :func:`train_wide` — fits ``logit = Σ_f r_f · r_scale · (w_f + w_adj) + b`` with SparseAdam on ``w`` (zero at
   the start), ``wide_epochs`` epochs of shuffled batches, the best epoch by validation loss, and folds
   ``r · r_scale · (w + w_adj)`` into ``NgramBag.weight``. A checkpoint after every epoch lets a killed job resume
   at the next epoch (:class:`WideCheckpoint` is the state it saves).

Only the standard library, numpy and torch are imported: this module ships inside ``model.tar.gz``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.channels import Channel, ragged_positions
from model.network import NgramBag

FEATURE_BATCH = 256
EVAL_BATCH = 512
Log = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class FeatureBags:
    """Each review's distinct feature ids (sorted, no 0), ragged in review order: review i is
    ``flat[starts[i] : starts[i] + counts[i]]``."""

    flat: np.ndarray  # int64
    starts: np.ndarray  # int64 (n,)
    counts: np.ndarray  # int64 (n,)

    @classmethod
    def of(cls, bag: NgramBag, channel: Channel, batch: int = FEATURE_BATCH) -> FeatureBags:
        """The features ``bag`` computes for every review of ``channel`` (in length-sorted batches)."""
        parts: list[np.ndarray] = []
        counts = np.zeros(len(channel), dtype=np.int64)
        order: list[np.ndarray] = []
        with torch.inference_mode():
            for index, rows in channel.batches(batch):
                features = bag.features(torch.from_numpy(rows)).numpy()
                kept = features > 0
                counts[index] = kept.sum(axis=1)
                parts.append(features[kept])  # row-major: each row's sorted features in turn
                order.append(index)
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        sorted_index = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
        sorted_starts = np.zeros(len(sorted_index), dtype=np.int64)
        np.cumsum(counts[sorted_index][:-1], out=sorted_starts[1:])
        where = np.zeros(len(channel), dtype=np.int64)
        where[sorted_index] = sorted_starts  # review i's features in `flat` (length order)
        flat = flat[ragged_positions(where, counts)].astype(np.int64)  # review order: 0's features, then 1's …
        starts = np.zeros(len(channel), dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        return cls(flat, starts, counts)

    def __len__(self) -> int:
        return len(self.counts)

    def review(self, i: int) -> np.ndarray:
        return self.flat[self.starts[i] : self.starts[i] + self.counts[i]]

    def batch(self, index: np.ndarray) -> torch.Tensor:
        """``(len(index), most features)`` int64, padded with the zero-weight feature 0."""
        counts = self.counts[index]
        width = max(1, int(counts.max(initial=0)))
        out = np.zeros((len(index), width), dtype=np.int64)
        mask = np.arange(width)[None, :] < counts[:, None]
        out[mask] = self.flat[(self.starts[index][:, None] + np.arange(width)[None, :])[mask]]
        return torch.from_numpy(out)


def nb_ratios(bags: FeatureBags, labels: np.ndarray, size: int, alpha: float) -> torch.Tensor:
    """Naive-Bayes log-count ratios (float32, ``size``) of binarized features; feature 0 gets 0."""
    labels = np.asarray(labels).reshape(-1)
    positive_rows = np.repeat(labels > 0.5, bags.counts)
    positive = np.bincount(bags.flat[positive_rows], minlength=size).astype(np.float64) + alpha
    negative = np.bincount(bags.flat[~positive_rows], minlength=size).astype(np.float64) + alpha
    ratios = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
    ratios[0] = 0.0
    return torch.from_numpy(ratios.astype(np.float32))


def shuffled_batches(count: int, batch_size: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


@dataclass(frozen=True)
class WideSettings:
    epochs: int = 2
    lr: float = 0.03
    batch_size: int = 64
    r_scale: float = 0.1
    w_adj: float = 0.0
    nb_alpha: float = 1.0
    seed: int = 42


@dataclass
class WideCheckpoint:
    """What the wide stage saves after every epoch (plain tensors and JSON-able values: ``weights_only`` loads it)."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    w: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    optimizers: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_w: torch.Tensor | None = None
    best_bias: torch.Tensor | None = None


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.binary_cross_entropy_with_logits(logits, labels))


def train_wide(
    bag: NgramBag,
    settings: WideSettings,
    bags: FeatureBags,
    labels: np.ndarray,
    val_bags: FeatureBags,
    val_labels: np.ndarray,
    log: Log = print,
    resume: WideCheckpoint | None = None,
    save: Callable[[WideCheckpoint], None] | None = None,
) -> dict[str, Any]:
    """Fit the NBSVM weights and fold the best epoch's into ``bag`` (weight and bias); returns the stage metrics.

    ``resume``: a checkpoint from ``save`` (called after every epoch) to continue from.
    """
    size = bag.weight.shape[0]
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    val_labels_t = torch.as_tensor(np.asarray(val_labels), dtype=torch.float32)
    ratios = nb_ratios(bags, labels, size, settings.nb_alpha)
    scaled = ratios * settings.r_scale
    state = resume or WideCheckpoint()
    w = nn.Parameter(state.w.clone() if state.w is not None else torch.zeros(size, 1))
    bias = nn.Parameter(state.bias.clone() if state.bias is not None else torch.zeros(1))
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.SparseAdam([w], lr=settings.lr),
        torch.optim.Adam([bias], lr=settings.lr),
    ]
    if state.optimizers:
        for optimizer, saved in zip(optimizers, state.optimizers, strict=True):
            optimizer.load_state_dict(saved)
    if state.epoch:
        log(f"resuming the wide stage after epoch {state.epoch}")

    def logits(features: torch.Tensor, train: bool) -> torch.Tensor:
        weights = scaled[features]
        summed = F.embedding_bag(features, w, mode="sum", per_sample_weights=weights, sparse=train)
        out = summed.squeeze(-1) + bias
        return out + settings.w_adj * weights.sum(dim=1) if settings.w_adj else out

    def val_logits() -> torch.Tensor:
        out = torch.empty(len(val_bags))
        with torch.no_grad():
            for start in range(0, len(val_bags), EVAL_BATCH):
                index = np.arange(start, min(start + EVAL_BATCH, len(val_bags)))
                out[start : start + len(index)] = logits(val_bags.batch(index), False)
        return out

    while state.epoch < settings.epochs:
        epoch = state.epoch + 1
        started, total = time.perf_counter(), 0.0
        for index in shuffled_batches(len(bags), settings.batch_size, settings.seed * 1000 + epoch):
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(logits(bags.batch(index), True), labels_t[index])
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total += float(loss.detach()) * len(index)
        out = val_logits()
        val_loss = _bce(out, val_labels_t)
        val_accuracy = float(((out > 0).float() == val_labels_t).float().mean())
        seconds = time.perf_counter() - started
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(bags),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "epoch_s": seconds,
            }
        )
        log(
            f"wide epoch {epoch}: train loss {total / len(bags):.4f}, val loss {val_loss:.4f}, "
            f"val accuracy {val_accuracy:.4f}, {seconds:.1f} s"
        )
        if val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            state.best_w, state.best_bias = w.detach().clone(), bias.detach().clone()
        state.w, state.bias = w.detach().clone(), bias.detach().clone()
        state.optimizers = [optimizer.state_dict() for optimizer in optimizers]
        if save is not None:
            save(state)
    assert state.best_w is not None and state.best_bias is not None
    with torch.no_grad():
        bag.weight.copy_(scaled[:, None] * (state.best_w + settings.w_adj))
        bag.weight[0] = 0.0
        bag.bias.copy_(state.best_bias)
    best = min(state.history, key=lambda entry: entry["val_loss"])
    return {
        "history": state.history,
        "best_epoch": int(best["epoch"]),
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "features_seen": int((np.bincount(bags.flat, minlength=1) > 0).sum()),
        "feature_space": int(size),
    }
