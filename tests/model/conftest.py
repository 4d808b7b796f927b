"""Small training channels built from synthetic reviews with the real preprocessing code."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from model.preprocessing import (
    PreprocessingConfig,
    Preprocessor,
    build_vocabulary,
    encode_many,
    review_to_words,
)
from tests.synthetic import synthetic_review

VOCAB_SIZE = 40
MAX_LEN = 60


def _write_rows(path: Path, labels: np.ndarray, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([labels, rows]), fmt="%d", delimiter=",")


def write_channels(root: Path, per_class: int = 150, seed: int = 3) -> Path:
    """Write ``root/train`` (csv, word_dict.json, preprocessing.json) and ``root/validation``; return root."""
    rng = random.Random(seed)
    labels = np.array([1, 0] * per_class, dtype=np.int64)
    words = [review_to_words(synthetic_review(rng, bool(label))) for label in labels]
    cut = int(len(labels) * 0.8)
    word_dict = build_vocabulary(words[:cut], VOCAB_SIZE)
    rows = encode_many(words, word_dict, MAX_LEN)
    _write_rows(root / "train" / "train.csv", labels[:cut], rows[:cut])
    _write_rows(root / "validation" / "validation.csv", labels[cut:], rows[cut:])
    Preprocessor(word_dict, PreprocessingConfig(vocab_size=VOCAB_SIZE, max_len=MAX_LEN)).save(root / "train")
    return root


@pytest.fixture(scope="session")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only synthetic channels (240 train rows, 60 validation rows)."""
    return write_channels(tmp_path_factory.mktemp("channels"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny networks gain nothing from intra-op threads, and spinning threads crawl on a shared machine."""
    import torch

    torch.set_num_threads(1)
