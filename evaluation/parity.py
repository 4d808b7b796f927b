"""Serving parity: raw reviews through a serving path must reproduce the batch evaluation, one for one.

The serving answers come from a callable (``serve``): in the pipeline it invokes the candidate endpoint exactly
as the Lambda does (``tasks/parity.py``); in tests it may run the handler functions in process. Batch scores
come from the transform over the encoded test channel. Equal labels and scores within ``tolerance`` prove that
the channel's preprocessing and the served preprocessing (and model) are the same. This module only compares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import SentiflowError

DEFAULT_TOLERANCE = 1e-5
_EXCERPT_CHARS = 160

Serve = Callable[[Sequence[str]], list[dict[str, Any]]]
"""Raw reviews → one answer per review: ``{"label", "score", …}`` or ``{"error": message}``."""


@dataclass(frozen=True)
class ParityResult:
    passed: bool
    checked: int
    mismatched: int
    max_abs_diff: float
    tolerance: float
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> str:
        if self.passed:
            return f"serving parity: {self.checked} reviews, labels identical, max |Δscore| {self.max_abs_diff:.2e}"
        return (
            f"serving parity FAILED: {self.mismatched} of {self.checked} reviews differ from batch evaluation "
            f"(max |Δscore| {self.max_abs_diff:.3g}); first: {self.examples[0] if self.examples else '-'}"
        )


def sample_indices(total: int, sample: int, seed: int) -> np.ndarray:
    """``sample`` distinct indices of ``range(total)`` in ascending order (all when ``sample >= total``)."""
    if sample >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))


def compare(
    raw_reviews: Sequence[str],
    batch_labels: Sequence[str],
    batch_scores: np.ndarray,
    picked: Sequence[int],
    answers: Sequence[dict[str, Any]],
    tolerance: float = DEFAULT_TOLERANCE,
    max_examples: int = 10,
) -> ParityResult:
    """Compare serving ``answers`` (one per index of ``picked``) with the batch rows at those indices."""
    if len(answers) != len(picked):
        raise SentiflowError(f"parity check got {len(answers)} serving answers for {len(picked)} reviews")
    examples: list[dict[str, Any]] = []
    mismatched, max_diff = 0, 0.0
    for index, answer in zip(picked, answers, strict=True):
        diff = abs(float(answer["score"]) - batch_scores[index]) if "score" in answer else float("inf")
        max_diff = max(max_diff, diff)
        if "error" in answer or answer.get("label") != batch_labels[index] or diff > tolerance:
            mismatched += 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        "index": int(index),
                        "review": raw_reviews[index][:_EXCERPT_CHARS],
                        "batch_label": batch_labels[index],
                        "batch_score": float(batch_scores[index]),
                        "serving": dict(answer),
                    }
                )
    return ParityResult(mismatched == 0, len(picked), mismatched, float(max_diff), tolerance, examples)


def parity_check(
    raw_reviews: Sequence[str],
    batch_scores: Sequence[float] | np.ndarray,
    sample: int,
    serve: Serve,
    *,
    batch_labels: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 42,
    max_examples: int = 10,
) -> ParityResult:
    """Serve ``sample`` of ``raw_reviews`` (``raw_reviews[i]`` is the review of batch row ``i``) and compare the
    answers with the batch scores (and labels) of the same rows."""
    from model.inference import label_for

    scores = np.asarray(batch_scores, dtype=np.float64)
    if len(raw_reviews) != len(scores) or (batch_labels is not None and len(batch_labels) != len(scores)):
        raise SentiflowError(
            f"parity check got {len(raw_reviews)} raw reviews and {len(scores)} batch scores; they must be the "
            "same test rows in the same order (test channel order)"
        )
    labels = list(batch_labels) if batch_labels is not None else [label_for(s) for s in scores]
    picked = sample_indices(len(scores), sample, seed).tolist()
    answers = serve([raw_reviews[i] for i in picked])
    return compare(raw_reviews, labels, scores, picked, answers, tolerance, max_examples)
