"""Model tests run torch on one thread (tiny networks gain nothing from more on a shared 2-core machine)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny networks gain nothing from intra-op threads, and spinning threads crawl on a shared machine."""
    import torch

    torch.set_num_threads(1)


# --- synthetic channels in the default format (words-neg-punct-2, whole reviews, .npz) ------------------------

NP2_VOCAB_SIZE = 60
NP2_MAX_LEN = 200


def synthetic_np2_data(per_class: int = 120, seed: int = 3) -> tuple[list[str], np.ndarray]:
    """Synthetic reviews (sentiment words among filler) and their 0/1 labels, alternating."""
    from tests.fixtures.synthetic import synthetic_review

    rng = random.Random(seed)
    labels = np.array([1, 0] * per_class, dtype=np.int64)
    return [synthetic_review(rng, bool(label)) for label in labels], labels


def write_np2_channels(root: Path, per_class: int = 120, seed: int = 3) -> Path:
    """``root/train`` (train.npz, word_dict.json, preprocessing.json) and ``root/validation`` (80 % / 20 %)."""
    from model.channels import Channel, write_channel
    from model.preprocessing import (
        NEG_PUNCT_VERSION,
        PreprocessingConfig,
        Preprocessor,
        build_vocabulary,
        encode_ids,
        tokenize_many,
    )

    reviews, labels = synthetic_np2_data(per_class, seed)
    tokens = tokenize_many(reviews, NEG_PUNCT_VERSION, workers=1)
    cut = int(len(labels) * 0.8)
    word_dict = build_vocabulary(tokens[:cut], NP2_VOCAB_SIZE)
    config = PreprocessingConfig(vocab_size=NP2_VOCAB_SIZE, max_len=NP2_MAX_LEN, tokenizer_version=NEG_PUNCT_VERSION)
    Preprocessor(word_dict, config).save(root / "train")
    for name, part in (("train", slice(0, cut)), ("validation", slice(cut, None))):
        lengths, ids = encode_ids(tokens[part], word_dict, NP2_MAX_LEN)
        write_channel(root / name / f"{name}.npz", Channel(lengths, ids, labels[part]))
    return root


@pytest.fixture(scope="session")
def np2_channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only synthetic channels in the default format (192 train reviews, 48 validation reviews)."""
    return write_np2_channels(tmp_path_factory.mktemp("np2-channels"))
