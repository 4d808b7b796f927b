"""Channels: the SageMaker CSV layout, the stratified hold-out, and the content-keyed cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.preprocessing import Preprocessor, review_to_words
from tasks.data import prepare as prepare_module
from tasks.data.load import load_archive
from tasks.data.prepare import prepare_channels, stratified_holdout


@pytest.fixture
def frame(synthetic_archive) -> pd.DataFrame:
    return load_archive(synthetic_archive)


def _read(path) -> np.ndarray:
    return pd.read_csv(path, header=None).to_numpy()


def test_channel_files_and_row_format(settings, frame) -> None:
    result = prepare_channels(frame, "sha-a", settings)
    root = result.channel_dir("train").parent
    assert result.counts == {"train": 180, "validation": 20, "test": 200} and not result.cached
    train = _read(root / "train" / "train.csv")
    assert train.shape == (180, 2 + settings.max_len)
    assert set(train[:, 0]) == {0, 1}
    lengths, ids = train[:, 1], train[:, 2:]
    for length, row in zip(lengths, ids, strict=True):
        assert (row[:length] >= 1).all() and (row[length:] == 0).all()
    test = _read(root / "test" / "test.csv")
    assert (_read(root / "test" / "test_features.csv") == test[:, 1:]).all()
    assert (_read(root / "test" / "test_labels.csv")[:, 0] == test[:, 0]).all()


def test_test_rows_follow_the_table_order_and_the_shared_encoder(settings, frame) -> None:
    result = prepare_channels(frame, "sha-a", settings)
    preprocessor = Preprocessor.from_dir(result.channel_dir("train"))
    reviews = frame[frame.split == "test"].review.tolist()
    expected = preprocessor.encode_texts(reviews)
    assert (_read(result.channel_dir("test") / "test_features.csv") == expected).all()
    vocab = preprocessor.word_dict
    assert sorted(vocab.values()) == list(range(2, 2 + len(vocab)))
    train_words = {w for r in frame[frame.split == "train"].review for w in review_to_words(r)}
    assert set(vocab) <= train_words


def test_holdout_is_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 80 + [1] * 120)
    train, validation = stratified_holdout(labels, 0.1, seed=1)
    assert len(validation) == 20 and labels[validation].sum() == 12
    assert not set(train) & set(validation) and len(train) + len(validation) == 200
    again = stratified_holdout(labels, 0.1, seed=1)
    assert (again[0] == train).all() and (again[1] == validation).all()


def test_rerun_is_a_cache_hit_and_parameters_change_the_key(settings, frame, monkeypatch) -> None:
    first = prepare_channels(frame, "sha-a", settings)
    monkeypatch.setattr(prepare_module, "_build", lambda *a, **k: pytest.fail("rebuilt a cached entry"))
    second = prepare_channels(frame, "sha-a", settings)
    assert second.cached and second.root == first.root
    other = settings.with_overrides(max_len=50)
    with pytest.raises(pytest.fail.Exception):
        prepare_channels(frame, "sha-a", other)


def test_crash_mid_write_leaves_no_entry(settings, frame, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prepare_module, "_write_rows", explode)
    with pytest.raises(RuntimeError):
        prepare_channels(frame, "sha-b", settings)
    leftovers = list((settings.cache_dir / "channels").iterdir())
    assert leftovers == []


def test_subsampling_keeps_classes_balanced(settings, frame) -> None:
    result = prepare_channels(frame, "sha-c", settings, max_reviews_per_class=30)
    assert result.counts["test"] == 60 and result.counts["train"] + result.counts["validation"] == 60
