"""Channels: the .npz layout (and the batch-transform CSV), the tokenizer version, the stratified hold-out, the
content address, and publishing as one entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backends.local.storage import LocalArtifactStore
from core.io import read_json, sha256_file
from model.channels import load_channel, read_rows_csv
from model.preprocessing import NEG_PUNCT_VERSION, REFERENCE_VERSION, Preprocessor, tokenizer
from tasks.data import prepare as prepare_module
from tasks.data.load import dataset_key, load_archive
from tasks.data.prepare import ChannelParameters, channel_key, prepare_channels, stratified_holdout

PARAMETERS = ChannelParameters(vocab_size=60, max_len=80, validation_fraction=0.1, seed=42)


@pytest.fixture
def frame(synthetic_archive) -> pd.DataFrame:
    return load_archive(synthetic_archive)


@pytest.fixture
def store(settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.store_dir)


@pytest.fixture
def dataset_uri(store: LocalArtifactStore, frame: pd.DataFrame, tmp_path: Path) -> str:
    frame.to_parquet(tmp_path / "reviews.parquet", index=False)
    uri, _ = store.put_file(tmp_path / "reviews.parquet", dataset_key("a" * 64))
    return uri


def _folder(store: LocalArtifactStore, uri: str) -> Path:
    return store.path(store.key_from_uri(uri))


def test_channel_files_and_row_format(store, dataset_uri) -> None:
    result = prepare_channels(store, dataset_uri, PARAMETERS)
    assert result.counts == {"train": 180, "validation": 20, "test": 200}
    train = load_channel(_folder(store, result.channels["train"]) / "train.npz")
    assert len(train) == 180 and set(train.labels.tolist()) == {0, 1}
    assert train.lengths.max() <= PARAMETERS.max_len and (train.ids >= 1).all()
    test_dir = _folder(store, result.channels["test"])
    test = load_channel(test_dir / "test.npz")
    features = read_rows_csv(test_dir / "test_features.csv")
    assert features.labels is None and (features.lengths == test.lengths).all() and (features.ids == test.ids).all()
    labels = np.loadtxt(test_dir / "test_labels.csv", dtype=np.int64)
    assert (labels == test.labels).all()
    manifest = read_json(_folder(store, result.manifest_uri))
    for relative, digest in manifest["files"].items():
        assert sha256_file(_folder(store, result.channels["train"]).parent / relative) == digest
    assert all(store.exists(store.key_from_uri(uri)) for uri in result.artifacts())


@pytest.mark.parametrize("version", [NEG_PUNCT_VERSION, REFERENCE_VERSION])
def test_test_rows_follow_the_table_order_and_the_shared_encoder(store, dataset_uri, frame, version) -> None:
    """Each tokenizer version: the state records it, and serving's encoder gives exactly the channel's rows."""
    parameters = ChannelParameters(**{**PARAMETERS.__dict__, "tokenizer_version": version})
    result = prepare_channels(store, dataset_uri, parameters)
    preprocessor = Preprocessor.from_dir(_folder(store, result.channels["train"]))
    assert preprocessor.version == version
    reviews = frame[frame.split == "test"].review.tolist()
    expected = preprocessor.encode_texts(reviews)
    test = load_channel(_folder(store, result.channels["test"]) / "test.npz")
    assert (test.rows() == expected[:, : test.rows().shape[1]]).all() and (expected[:, 0] == test.lengths).all()
    vocab = preprocessor.word_dict
    assert sorted(vocab.values()) == list(range(2, 2 + len(vocab)))
    train_words = {w for r in frame[frame.split == "train"].review for w in tokenizer(version)(r)}
    assert set(vocab) <= train_words
    manifest = read_json(_folder(store, result.manifest_uri))
    assert manifest["preprocessing"]["tokenizer_version"] == version


def test_an_unknown_tokenizer_version_is_named(store, dataset_uri) -> None:
    from core.errors import SentiflowError

    with pytest.raises(SentiflowError, match="tokenizer_version: unknown tokenizer_version 'nope'"):
        prepare_channels(store, dataset_uri, ChannelParameters(**{**PARAMETERS.__dict__, "tokenizer_version": "nope"}))


def test_holdout_is_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 80 + [1] * 120)
    train, validation = stratified_holdout(labels, 0.1, seed=1)
    assert len(validation) == 20 and labels[validation].sum() == 12
    assert not set(train) & set(validation) and len(train) + len(validation) == 200
    again = stratified_holdout(labels, 0.1, seed=1)
    assert (again[0] == train).all() and (again[1] == validation).all()


def test_the_key_names_the_content_dataset_parameters_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    key = channel_key("file:///store/datasets/a/reviews.parquet", PARAMETERS)
    assert key == channel_key("file:///store/datasets/a/reviews.parquet", PARAMETERS)
    assert key != channel_key("file:///store/datasets/b/reviews.parquet", PARAMETERS)
    changes = ({"vocab_size": 61}, {"max_len": 81}, {"seed": 1}, {"max_reviews_per_class": 10})
    for change in (*changes, {"tokenizer_version": REFERENCE_VERSION}):
        other = ChannelParameters(**{**PARAMETERS.__dict__, **change})
        assert channel_key("file:///store/datasets/a/reviews.parquet", other) != key, change
    monkeypatch.setattr(prepare_module, "code_fingerprint", lambda *modules: "other code")
    assert channel_key("file:///store/datasets/a/reviews.parquet", PARAMETERS) != key


def test_a_crash_mid_write_publishes_nothing(store, dataset_uri, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("model.channels.write_rows_csv", explode)  # after the .npz files are written
    with pytest.raises(RuntimeError):
        prepare_channels(store, dataset_uri, PARAMETERS)
    assert list((store.root / "channels").iterdir()) == []


def test_an_entry_already_published_is_kept(store, dataset_uri) -> None:
    first = prepare_channels(store, dataset_uri, PARAMETERS)
    train_csv = _folder(store, first.channels["train"]) / "train.npz"
    stamp = train_csv.stat().st_mtime_ns
    second = prepare_channels(store, dataset_uri, PARAMETERS)
    assert second.channels == first.channels and train_csv.stat().st_mtime_ns == stamp


def test_leftovers_of_a_killed_writer_are_cleared_before_writing(store, dataset_uri) -> None:
    key = channel_key(dataset_uri, PARAMETERS)
    partial = store.root / "channels" / f".{key}.killed.tmp"
    (partial / "train").mkdir(parents=True)
    (partial / "train" / "train.csv").write_text("1,2,3")
    result = prepare_channels(store, dataset_uri, PARAMETERS)
    assert not partial.exists() and result.key == key
    assert sorted(p.name for p in (store.root / "channels").iterdir()) == [key]


def test_subsampling_keeps_classes_balanced(store, dataset_uri) -> None:
    result = prepare_channels(store, dataset_uri, ChannelParameters(60, 80, 0.1, 42, max_reviews_per_class=30))
    assert result.counts["test"] == 60 and result.counts["train"] + result.counts["validation"] == 60


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_data_stage_runs_again_and_again_inside_a_flow(tmp_path: Path, prefect_api: str, monkeypatch) -> None:
    """Preprocessing inside a Prefect flow run (the engine's threads and signal handlers around it), several times:
    each run of the stage has a time limit, so a hang fails the flow naming the stage instead of hanging here."""
    from core.io import sha256_file
    from tests.fixtures.prefect_flows import data_stage_repeatedly
    from tests.fixtures.synthetic import write_archive

    monkeypatch.setenv("SENTIFLOW_HOME", str(tmp_path / "home"))
    archive = write_archive(tmp_path, per_class=600, name="many.tar.gz")  # enough rows for a pool, if there were one
    seconds = data_stage_repeatedly(str(archive), sha256_file(archive), times=4)
    assert len(seconds) == 4 and all(s > 0 for s in seconds)
