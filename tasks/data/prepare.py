"""Stages 4–6 — tokenize, build the vocabulary, encode, and publish the SageMaker training channels to the store.

The channels are one content-addressed store entry, ``channels/<key>/``: ``key`` hashes the dataset, the
preprocessing parameters and the preprocessing code, so it names exactly what the entry holds. The entry is
built in a temporary folder and published as a whole (see ``ArtifactStore.publish_dir``), so a crash — even a
``kill -9`` — never leaves a partial entry behind; ``manifest.json`` records every file's sha256.

Layout (see DEVELOPERS.md)::

    channels/<key>/train/train.npz  word_dict.json  preprocessing.json
    channels/<key>/validation/validation.npz
    channels/<key>/test/test.npz  test_features.csv  test_labels.csv
    channels/<key>/manifest.json

``.npz`` channels hold whole reviews (up to ``max_len`` tokens) in ragged form (:mod:`model.channels`);
``test_features.csv`` is the batch-transform input, one line ``length,id_1,…,id_length`` per review (variable
length); ``test_labels.csv`` one label per line. The reviews are tokenized with ``tokenizer_version``
(``words-neg-punct-2`` by default; ``reference-bs4-porter-1`` is the notebook's), which ``preprocessing.json``
records with its parameters, so training, serving and parity follow it.

Reruns are Prefect's cache (this stage is keyed on its inputs and code, see ``tasks.data.keys``); nothing here
checks for earlier results. :func:`build_channels` does the work; ``prepare_task`` is the Prefect stage.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task

from core.errors import SentiflowError
from core.fingerprint import code_fingerprint
from core.io import atomic_write_json, sha256_file, sha256_text
from tasks.data.keys import CHANNEL_FILES, PREPARE, PREPROCESSING_CODE, channel_artifacts, data_stage_cache
from tasks.policies import local_stage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ChannelParameters:
    """Everything besides the dataset that decides what the channels hold."""

    vocab_size: int
    max_len: int
    validation_fraction: float
    seed: int
    max_reviews_per_class: int | None = None
    tokenizer_version: str = "words-neg-punct-2"


@dataclass(frozen=True)
class ChannelSet:
    """A published set of training channels: store URIs of each channel folder and of the manifest."""

    key: str
    channels: dict[str, str]
    manifest_uri: str
    counts: dict[str, int]
    vocabulary_size: int
    seconds: float

    def file_uri(self, channel: str, name: str) -> str:
        return f"{self.channels[channel]}/{name}"

    def artifacts(self) -> list[str]:
        return channel_artifacts(self.channels, self.manifest_uri)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def channel_key(dataset_uri: str, parameters: ChannelParameters) -> str:
    """The content address of the channels of ``dataset_uri`` under ``parameters`` with this code."""
    params = ",".join(f"{name}={value}" for name, value in sorted(asdict(parameters).items()))
    return sha256_text(dataset_uri, params, code_fingerprint(*PREPROCESSING_CODE))[:20]


def subsample(frame: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """At most ``per_class`` reviews per (split, label), chosen with ``seed`` (for small, quick runs)."""
    import pandas as pd

    if per_class is None:
        return frame
    parts = [
        group.sample(n=min(per_class, len(group)), random_state=seed)
        for _, group in frame.groupby(["split", "label"], sort=True)
    ]
    return pd.concat(parts).sort_values(["split", "label", "id"], ignore_index=True)


def raw_test_reviews(frame: pd.DataFrame, per_class: int | None, seed: int) -> list[str]:
    """Raw test reviews in the order of the test channel's rows (the same subsample, test split)."""
    frame = subsample(frame, per_class, seed)
    return frame.loc[frame["split"] == "test", "review"].tolist()


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) row indices with the same label balance in both."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train_parts, validation_parts = [], []
    for value in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == value))
        cut = int(round(len(indices) * fraction))
        validation_parts.append(indices[:cut])
        train_parts.append(indices[cut:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(validation_parts))


def build_channels(frame: pd.DataFrame, parameters: ChannelParameters, out: Path, key: str) -> dict[str, Any]:
    """Write the channel files of ``frame`` into ``out`` (empty folder); returns the manifest (also written)."""
    import numpy as np

    from model import preprocessing
    from model.channels import Channel, write_channel, write_rows_csv
    from model.preprocessing import PreprocessingConfig, Preprocessor

    try:
        preprocessing.tokenizer_spec(parameters.tokenizer_version)
    except ValueError as error:
        raise SentiflowError(f"setting tokenizer_version: {error}") from None
    frame = subsample(frame, parameters.max_reviews_per_class, parameters.seed)
    train = frame[frame["split"] == "train"]
    test = frame[frame["split"] == "test"]
    # one process: this stage runs inside Prefect's threaded engine (see preprocessing.tokenize_many)
    train_tokens = preprocessing.tokenize_many(train["review"].tolist(), parameters.tokenizer_version)
    test_tokens = preprocessing.tokenize_many(test["review"].tolist(), parameters.tokenizer_version)

    word_dict = preprocessing.build_vocabulary(train_tokens, parameters.vocab_size)
    config = PreprocessingConfig(
        vocab_size=parameters.vocab_size, max_len=parameters.max_len, tokenizer_version=parameters.tokenizer_version
    )
    train_labels = train["label"].to_numpy()
    test_labels = test["label"].to_numpy()
    everything = Channel(*preprocessing.encode_ids(train_tokens, word_dict, parameters.max_len), train_labels)
    test_channel = Channel(*preprocessing.encode_ids(test_tokens, word_dict, parameters.max_len), test_labels)
    fit_idx, val_idx = stratified_holdout(train_labels, parameters.validation_fraction, parameters.seed)

    for name in CHANNEL_FILES:
        (out / name).mkdir()
    Preprocessor(word_dict, config).save(out / "train")
    write_channel(out / "train" / "train.npz", everything.take(fit_idx))
    write_channel(out / "validation" / "validation.npz", everything.take(val_idx))
    write_channel(out / "test" / "test.npz", test_channel)
    write_rows_csv(out / "test" / "test_features.csv", Channel(test_channel.lengths, test_channel.ids))
    (out / "test" / "test_labels.csv").write_text("".join(f"{int(label)}\n" for label in test_labels))

    sample = everything.take(np.arange(min(2000, len(everything))))
    known = [np.mean(sample.review(i) >= 2) for i in range(len(sample)) if sample.lengths[i] > 0]
    in_vocab = np.sum(known) / len(sample) if len(sample) else 0.0
    manifest = {
        "key": key,
        "parameters": asdict(parameters),
        "preprocessing": config.to_dict(),
        "counts": {"train": len(fit_idx), "validation": len(val_idx), "test": len(test_channel)},
        "vocabulary_size": len(word_dict) + 2,
        "mean_tokens": float(np.mean([len(t) for t in train_tokens])) if train_tokens else 0.0,
        "truncated_share": float(np.mean([len(t) > parameters.max_len for t in train_tokens])) if train_tokens else 0.0,
        "known_token_share": float(in_vocab),
        "test_order": "test split of reviews.parquet (after the subsample), sorted by (label, id)",
        "files": {
            f"{name}/{file}": sha256_file(out / name / file) for name, files in CHANNEL_FILES.items() for file in files
        },
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def prepare_channels(store: Any, dataset_uri: str, parameters: ChannelParameters) -> ChannelSet:
    """Build the channels of the stored dataset and publish them to ``store`` as one entry."""
    from tasks.data.load import read_dataset

    started = time.perf_counter()
    key = channel_key(dataset_uri, parameters)
    prefix = f"channels/{key}"
    frame = read_dataset(store, dataset_uri)
    with store.publish_dir(prefix) as folder:
        manifest = build_channels(frame, parameters, folder, key)
    return ChannelSet(
        key=key,
        channels={name: store.uri(f"{prefix}/{name}") for name in CHANNEL_FILES},
        manifest_uri=store.uri(f"{prefix}/{MANIFEST}"),
        counts=manifest["counts"],
        vocabulary_size=manifest["vocabulary_size"],
        seconds=round(time.perf_counter() - started, 3),
    )


# --- the Prefect task ----------------------------------------------------------------------------------


@task(**local_stage(PREPARE), **data_stage_cache(PREPARE))
def prepare_task(
    dataset_uri: str,
    vocab_size: int,
    max_len: int,
    validation_fraction: float,
    seed: int,
    max_reviews_per_class: int | None,
    backend: str,
    tokenizer_version: str | None = None,
) -> ChannelSet:
    """Tokenize, build the vocabulary and publish the train/validation/test channels to the artifact store."""
    from prefect.artifacts import create_table_artifact
    from prefect.logging import get_run_logger

    from backends.base import get_store
    from core.config import get_settings

    settings = get_settings(
        "parameter",
        backend=backend,
        vocab_size=vocab_size,
        max_len=max_len,
        validation_fraction=validation_fraction,
        seed=seed,
        tokenizer_version=tokenizer_version,
    )
    parameters = ChannelParameters(
        settings.vocab_size,
        settings.max_len,
        settings.validation_fraction,
        settings.seed,
        max_reviews_per_class,
        settings.tokenizer_version,
    )
    channels = prepare_channels(get_store(settings), dataset_uri, parameters)
    rate = sum(channels.counts.values()) / max(channels.seconds, 1e-9)
    get_run_logger().info(
        "preprocess: %s in %.1f s (%.0f reviews/s) → %s",
        channels.counts, channels.seconds, rate, channels.manifest_uri.rsplit("/", 1)[0],
    )  # fmt: skip
    create_table_artifact(
        key="channels",
        table=[
            {"channel": name, "rows": rows, "uri": channels.channels[name]} for name, rows in channels.counts.items()
        ],
        description=f"Training channels {channels.key} ({parameters.tokenizer_version}, vocabulary "
        f"{channels.vocabulary_size}, max_len {parameters.max_len})",
    )
    return channels
