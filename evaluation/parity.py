"""Serving parity: raw reviews through the serving path must reproduce the batch evaluation, one for one.

Raw text goes through ``input_fn → predict_fn → output_fn`` (application/json), exactly as an endpoint
runs it; batch scores come from the transform over the encoded test channel. Equal labels and scores
within ``tolerance`` prove that the channel's preprocessing and the served preprocessing are the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SentiflowError

DEFAULT_TOLERANCE = 1e-5
_EXCERPT_CHARS = 160


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
            f"serving parity FAILED: {self.mismatched} of {self.checked} reviews differ from batch "
            "evaluation "
            f"(max |Δscore| {self.max_abs_diff:.3g}); first: {self.examples[0] if self.examples else '-'}"
        )


def sample_indices(total: int, sample: int, seed: int) -> np.ndarray:
    """``sample`` distinct indices of ``range(total)`` in ascending order (all when ``sample >= total``)."""
    if sample >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))


def serve_reviews(model: Any, reviews: Sequence[str], chunk: int = 256) -> list[dict[str, Any]]:
    """Each review's serving answer ``{"label", "score"}`` (or ``{"error"}``), via the JSON request path."""
    from model.inference import BadRequest, input_fn, output_fn, predict_fn

    answers: list[dict[str, Any]] = []
    for start in range(0, len(reviews), chunk):
        part = list(reviews[start : start + chunk])
        try:
            body = json.dumps({"reviews": part}).encode("utf-8")
            answers.extend(json.loads(output_fn(predict_fn(input_fn(body, "application/json"), model), None)[0]))
        except BadRequest:
            for review in part:  # find the offending review(s); the rest still count
                try:
                    body = json.dumps({"review": review}).encode("utf-8")
                    answers.append(
                        json.loads(output_fn(predict_fn(input_fn(body, "application/json"), model), None)[0])
                    )
                except BadRequest as error:
                    answers.append({"error": str(error)})
    return answers


def parity_check(
    model: Any,
    raw_reviews: Sequence[str],
    batch_scores: Sequence[float] | np.ndarray,
    sample: int,
    *,
    batch_labels: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 42,
    max_examples: int = 10,
) -> ParityResult:
    """Compare the serving path on ``sample`` raw reviews with the batch scores (and labels) of the same rows.

    ``model`` is a loaded model or a model folder; ``raw_reviews[i]`` must be the review of batch row ``i``.
    """
    from model.inference import label_for, model_fn

    scores = np.asarray(batch_scores, dtype=np.float64)
    if len(raw_reviews) != len(scores) or (batch_labels is not None and len(batch_labels) != len(scores)):
        raise SentiflowError(
            f"parity check got {len(raw_reviews)} raw reviews and {len(scores)} batch scores; they must be "
            "the "
            "same test rows in the same order (test channel order)"
        )
    if isinstance(model, str | Path):
        model = model_fn(str(model))
    labels = list(batch_labels) if batch_labels is not None else [label_for(s) for s in scores]
    picked = sample_indices(len(scores), sample, seed)
    answers = serve_reviews(model, [raw_reviews[i] for i in picked])
    examples: list[dict[str, Any]] = []
    mismatched, max_diff = 0, 0.0
    for index, answer in zip(picked.tolist(), answers, strict=True):
        diff = abs(answer["score"] - scores[index]) if "score" in answer else float("inf")
        max_diff = max(max_diff, diff)
        if "error" in answer or answer["label"] != labels[index] or diff > tolerance:
            mismatched += 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        "index": index,
                        "review": raw_reviews[index][:_EXCERPT_CHARS],
                        "batch_label": labels[index],
                        "batch_score": float(scores[index]),
                        "serving": answer,
                    }
                )
    return ParityResult(mismatched == 0, len(picked), mismatched, float(max_diff), tolerance, examples)
