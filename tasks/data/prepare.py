"""Stages 4–6 — tokenize, build the vocabulary, encode, and write the SageMaker training channels, cached.

A channel set is keyed by the dataset's content hash, the parameters and the preprocessing code, so a rerun on
the same inputs does no preprocessing work. It is built in a temporary folder and renamed into place, so a crash
never leaves a partial entry.

Layout (see DEVELOPERS.md)::

    <key>/train/train.csv  word_dict.json  preprocessing.json
    <key>/validation/validation.csv
    <key>/test/test.csv  test_features.csv  test_labels.csv
    <key>/manifest.json

:func:`prepare_channels` does the work; ``prepare_task`` is the Prefect stage around it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from core.config import Settings
from core.io import atomic_dir, atomic_write_json, read_json, sha256_file
from tasks.policies import LOCAL_RETRIES, STAGE_OPTIONS

CHANNEL_FILES = {
    "train": ("train.csv", "word_dict.json", "preprocessing.json"),
    "validation": ("validation.csv",),
    "test": ("test.csv", "test_features.csv", "test_labels.csv"),
}


@dataclass(frozen=True)
class ChannelSet:
    """A prepared, cached set of training channels."""

    root: str
    key: str
    cached: bool
    counts: dict[str, int]
    vocabulary_size: int
    seconds: float

    def channel_dir(self, name: str) -> Path:
        return Path(self.root) / name

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the source files that decide what the channels contain."""
    digest = hashlib.sha256()
    origins = [importlib.util.find_spec(name).origin for name in ("model.preprocessing", "model.stopwords")]
    for path in (*origins, __file__):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def channel_key(dataset_sha256: str, settings: Settings, max_reviews_per_class: int | None) -> str:
    params = (
        f"vocab={settings.vocab_size} max_len={settings.max_len} val={settings.validation_fraction} "
        f"seed={settings.seed} per_class={max_reviews_per_class}"
    )
    return hashlib.sha256(f"{dataset_sha256}\0{params}\0{code_fingerprint()}".encode()).hexdigest()[:20]


def subsample(frame: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """At most ``per_class`` reviews per (split, label), chosen with ``seed`` (for small, quick runs)."""
    if per_class is None:
        return frame
    parts = [
        group.sample(n=min(per_class, len(group)), random_state=seed)
        for _, group in frame.groupby(["split", "label"], sort=True)
    ]
    return pd.concat(parts).sort_values(["split", "label", "id"], ignore_index=True)


def _write_rows(path: Path, rows: np.ndarray, labels: np.ndarray | None) -> None:
    columns = ([labels.astype(np.int64)] if labels is not None else []) + [rows[:, i] for i in range(rows.shape[1])]
    table = pa.table({f"c{i}": column for i, column in enumerate(columns)})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) row indices with the same label balance in both."""
    rng = np.random.default_rng(seed)
    train_parts, validation_parts = [], []
    for value in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == value))
        cut = int(round(len(indices) * fraction))
        validation_parts.append(indices[:cut])
        train_parts.append(indices[cut:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(validation_parts))


def _build(frame: pd.DataFrame, settings: Settings, out: Path, key: str, dataset_sha256: str) -> dict:
    from model import preprocessing  # imported here: NLTK's import alone costs about a second
    from model.preprocessing import PreprocessingConfig, Preprocessor

    train = frame[frame["split"] == "train"]
    test = frame[frame["split"] == "test"]
    workers = settings.preprocess_workers
    train_tokens = preprocessing.reviews_to_words(train["review"].tolist(), workers=workers)
    test_tokens = preprocessing.reviews_to_words(test["review"].tolist(), workers=workers)

    word_dict = preprocessing.build_vocabulary(train_tokens, settings.vocab_size)
    config = PreprocessingConfig(vocab_size=settings.vocab_size, max_len=settings.max_len)
    train_rows = preprocessing.encode_many(train_tokens, word_dict, settings.max_len)
    test_rows = preprocessing.encode_many(test_tokens, word_dict, settings.max_len)
    train_labels = train["label"].to_numpy()
    test_labels = test["label"].to_numpy()
    fit_idx, val_idx = stratified_holdout(train_labels, settings.validation_fraction, settings.seed)

    for name in CHANNEL_FILES:
        (out / name).mkdir()
    Preprocessor(word_dict, config).save(out / "train")
    _write_rows(out / "train" / "train.csv", train_rows[fit_idx], train_labels[fit_idx])
    _write_rows(out / "validation" / "validation.csv", train_rows[val_idx], train_labels[val_idx])
    _write_rows(out / "test" / "test.csv", test_rows, test_labels)
    _write_rows(out / "test" / "test_features.csv", test_rows, None)
    _write_rows(out / "test" / "test_labels.csv", test_labels[:, None], None)

    in_vocab = np.mean([row[0] > 0 and np.mean(row[1 : row[0] + 1] >= 2) for row in train_rows[:2000]])
    return {
        "key": key,
        "dataset_sha256": dataset_sha256,
        "preprocessing": asdict(config),
        "counts": {"train": len(fit_idx), "validation": len(val_idx), "test": len(test_rows)},
        "vocabulary_size": len(word_dict) + 2,
        "mean_tokens": float(np.mean([len(t) for t in train_tokens])) if train_tokens else 0.0,
        "truncated_share": float(np.mean([len(t) > settings.max_len for t in train_tokens])) if train_tokens else 0.0,
        "known_token_share": float(in_vocab),
        "test_order": "test split of reviews.parquet, sorted by (label, id)",
        "files": {
            f"{name}/{file}": sha256_file(out / name / file) for name, files in CHANNEL_FILES.items() for file in files
        },
    }


def prepare_channels(
    frame: pd.DataFrame, dataset_sha256: str, settings: Settings, max_reviews_per_class: int | None = None
) -> ChannelSet:
    """Channels for ``frame`` (the validated dataset), from the cache when the same inputs were prepared before."""
    started = time.perf_counter()
    key = channel_key(dataset_sha256, settings, max_reviews_per_class)
    root = settings.cache_dir / "channels" / key
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        return ChannelSet(str(root), key, True, manifest["counts"], manifest["vocabulary_size"], 0.0)
    frame = subsample(frame, max_reviews_per_class, settings.seed)
    with atomic_dir(root) as tmp:
        manifest = _build(frame, settings, tmp, key, dataset_sha256)
        atomic_write_json(tmp / "manifest.json", manifest)
    return ChannelSet(
        str(root), key, False, manifest["counts"], manifest["vocabulary_size"], time.perf_counter() - started
    )


# --- the Prefect task ----------------------------------------------------------------------------------


@task(name="prepare-channels", **STAGE_OPTIONS, **LOCAL_RETRIES)
def prepare_task(
    settings: Settings, dataset: str, archive_sha256: str, max_reviews_per_class: int | None
) -> ChannelSet:
    """Tokenize, build the vocabulary and write the train/validation/test channels (cached)."""
    logger = get_run_logger()
    channels = prepare_channels(pd.read_parquet(dataset), archive_sha256, settings, max_reviews_per_class)
    if channels.cached:
        logger.info("preprocess: cache hit %s — no preprocessing work done", channels.root)
    else:
        rate = sum(channels.counts.values()) / max(channels.seconds, 1e-9)
        logger.info(
            "preprocess: %s in %.1f s (%.0f reviews/s) → %s",
            channels.counts,
            channels.seconds,
            rate,
            channels.root,
        )
    create_table_artifact(
        key="channels",
        table=[{"channel": name, "rows": rows} for name, rows in channels.counts.items()],
        description=f"Training channels {channels.key} (vocabulary {channels.vocabulary_size})",
    )
    return channels
