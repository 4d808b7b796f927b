"""A tiny real model for serving tests: synthetic reviews → channels → ``model/train.py`` (1 epoch) → model
folder.

Built once per test session under pytest's base temp folder, so fixtures in any test folder share it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import pack_model_dir
from model.preprocessing import (
    PreprocessingConfig,
    Preprocessor,
    build_vocabulary,
    encode_many,
    reviews_to_words,
)
from tests.synthetic import synthetic_review

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 60
MAX_LEN = 40  # shorter than most synthetic reviews: exercises truncation


@dataclass(frozen=True)
class TinyModel:
    """Paths and data of the tiny model."""

    model_dir: Path
    tar_path: Path
    test_reviews: list[str]
    test_labels: np.ndarray
    test_rows: np.ndarray  # encoded like the data stage does: (n, 1 + MAX_LEN)
    train_tokens: list[list[str]]
    train_labels: np.ndarray
    test_tokens: list[list[str]]


def _reviews(rng: random.Random, n: int) -> tuple[list[str], np.ndarray]:
    labels = np.array([i % 2 for i in range(n)], dtype=np.int64)
    return [synthetic_review(rng, bool(label)) for label in labels], labels


def _write_csv(path: Path, labels: np.ndarray | None, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = rows if labels is None else np.column_stack([labels, rows])
    np.savetxt(path, table, fmt="%d", delimiter=",")


def build_tiny_model(root: Path) -> TinyModel:
    """Write channels under ``root`` and train (skipped when ``root/model/model.pth`` already exists)."""
    rng = random.Random(11)
    train_reviews, train_labels = _reviews(rng, 240)
    validation_reviews, validation_labels = _reviews(rng, 60)
    test_reviews, test_labels = _reviews(rng, 200)
    test_reviews[0] = "<p>A <b>great</b> film &amp; " + " ".join(["wonderful"] * 300) + "</p>"  # > MAX_LEN tokens
    train_tokens = reviews_to_words(train_reviews, workers=1)
    test_tokens = reviews_to_words(test_reviews, workers=1)
    word_dict = build_vocabulary(train_tokens, VOCAB_SIZE)
    preprocessor = Preprocessor(word_dict, PreprocessingConfig(vocab_size=VOCAB_SIZE, max_len=MAX_LEN))
    test_rows = encode_many(test_tokens, word_dict, MAX_LEN)
    model_dir = root / "model"
    if not (model_dir / "model.pth").is_file():
        channels = root / "channels"
        preprocessor.save(channels / "train")
        _write_csv(channels / "train" / "train.csv", train_labels, encode_many(train_tokens, word_dict, MAX_LEN))
        validation_rows = encode_many(reviews_to_words(validation_reviews, workers=1), word_dict, MAX_LEN)
        _write_csv(channels / "validation" / "validation.csv", validation_labels, validation_rows)
        command = [
            sys.executable, str(PROJECT_ROOT / "model" / "train.py"),
            "--train", str(channels / "train"), "--validation", str(channels / "validation"),
            "--model-dir", str(model_dir), "--output-data-dir", str(root / "output"),
            "--checkpoint-dir", str(root / "checkpoints"),
            "--epochs", "3", "--embedding-dim", "8", "--hidden-dim", "8", "--batch-size", "16",
            "--num-threads", "1",
            "--learning-rate", "0.03",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"tiny model training failed:\n{done.stdout}\n{done.stderr}")
    tar_path = root / "model.tar.gz"
    if not tar_path.is_file():
        pack_model_dir(model_dir, tar_path)
    return TinyModel(
        model_dir=model_dir,
        tar_path=tar_path,
        test_reviews=test_reviews,
        test_labels=test_labels,
        test_rows=test_rows,
        train_tokens=train_tokens,
        train_labels=train_labels,
        test_tokens=test_tokens,
    )


def shuffled_copy(model_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` whose ``word_dict.json`` maps the words to permuted ids (broken
    preprocessing)."""
    import shutil

    shutil.copytree(model_dir, target)
    word_dict = json.loads((model_dir / "word_dict.json").read_text())
    ids = list(word_dict.values())
    random.Random(3).shuffle(ids)
    (target / "word_dict.json").write_text(json.dumps(dict(zip(word_dict, ids, strict=True))))
    return target
