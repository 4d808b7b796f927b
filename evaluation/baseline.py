"""The reference baseline: TF-IDF (unigrams + bigrams) and logistic regression on the same tokens as the
LSTM — the id tokens of the channel rows the network reads (whole reviews for the default model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.metrics import classification_metrics
from model.channels import Channel

Tokens = Sequence[str]


def rows_to_tokens(rows: np.ndarray | Channel) -> list[list[str]]:
    """Encoded channel rows ``length, ids…`` (padded, or a ragged :class:`~model.channels.Channel`) → the id tokens
    the network sees (padding dropped)."""
    if isinstance(rows, Channel):
        texts = rows.ids.astype(str).tolist()
        spans = zip(rows.starts.tolist(), rows.lengths.tolist(), strict=True)
        return [texts[start : start + length] for start, length in spans]
    return [[str(i) for i in row[1 : int(row[0]) + 1]] for row in np.asarray(rows)]


def _unigrams_and_bigrams(tokens: Tokens) -> list[str]:
    tokens = list(tokens)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


@dataclass(frozen=True)
class BaselineResult:
    metrics: dict
    scores: np.ndarray
    features: int


def tfidf_baseline(
    train_tokens: Sequence[Tokens],
    train_labels: Sequence[int] | np.ndarray,
    test_tokens: Sequence[Tokens],
    test_labels: Sequence[int] | np.ndarray,
    seed: int = 42,
) -> BaselineResult:
    """Fit on the train tokens, score the test tokens; returns metrics, P(positive) per test review and
    #features."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(analyzer=_unigrams_and_bigrams, min_df=2, sublinear_tf=True, dtype=np.float32)
    train_x = vectorizer.fit_transform(train_tokens)
    classifier = LogisticRegression(C=4.0, solver="liblinear", max_iter=1000, random_state=seed)
    classifier.fit(train_x, np.asarray(train_labels).astype(np.int64))
    scores = classifier.predict_proba(vectorizer.transform(test_tokens))[:, 1].astype(np.float64)
    return BaselineResult(classification_metrics(test_labels, scores), scores, int(train_x.shape[1]))
