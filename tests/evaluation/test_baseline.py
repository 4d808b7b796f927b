"""The TF-IDF baseline on word tokens and on encoded id rows."""

from __future__ import annotations

import numpy as np

from evaluation.baseline import rows_to_tokens, tfidf_baseline
from model.channels import Channel
from tests.fixtures.tiny_model import TinyModel


def test_baseline_on_tokens_and_id_rows(tiny: TinyModel) -> None:
    on_words = tfidf_baseline(tiny.train_tokens, tiny.train_labels, tiny.test_tokens, tiny.test_labels)
    assert on_words.metrics["accuracy"] > 0.9 and len(on_words.scores) == len(tiny.test_labels)
    assert rows_to_tokens(np.array([[2, 7, 9, 0], [0, 0, 0, 0]])) == [["7", "9"], []]
    assert rows_to_tokens(Channel.from_sequences([[7, 9], [], [3]])) == [["7", "9"], [], ["3"]]
    on_ids = tfidf_baseline(
        [["5", "6"], ["7", "8"]] * 5, [1, 0] * 5, rows_to_tokens(tiny.test_rows[:4]), tiny.test_labels[:4]
    )
    assert on_ids.metrics["n"] == 4
