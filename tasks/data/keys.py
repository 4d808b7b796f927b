"""The cache keys of the four data stages — the one function that computes them, Prefect-free.

Each data task is declared with ``**data_stage_cache(<stage>)``: Prefect persists its result record under
:func:`stage_key` of the task's name and its call parameters, and serves a later call with an equal key from that
record. The same function lets ``flows.data.up_to_date`` find those records before Prefect is even imported, so
the two can never disagree on what "changed" means.

A key hashes: the stage's name (two stages with equal inputs never share an entry), its inputs (all of them, as
JSON), the code fingerprint of the modules the stage runs (:data:`STAGE_CODE`, which include the task's own module,
so the task's source is covered) and, for ``download`` from a local file, that file's size and modification time
(an archive rewritten in place is fetched again). Nothing here imports Prefect, pandas or the stage modules.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlparse

from core.fingerprint import code_fingerprint
from core.io import local_path

DOWNLOAD, LOAD, VALIDATE, PREPARE = "download", "load-dataset", "validate-dataset", "prepare-channels"
DATA_STAGES = (DOWNLOAD, LOAD, VALIDATE, PREPARE)
"""The data stages in the order they run (their Prefect task names)."""

PREPROCESSING_CODE = ("tasks.data.prepare", "model.preprocessing", "model.stopwords", "model.porter", "model.channels")
"""What decides the channels' content besides the dataset and the parameters (also part of the channel key)."""

STAGE_CODE: dict[str, tuple[str, ...]] = {
    DOWNLOAD: ("tasks.data.download",),
    LOAD: ("tasks.data.load",),
    VALIDATE: ("tasks.data.validate",),
    PREPARE: PREPROCESSING_CODE,
}
"""The modules each data stage runs: their sources are part of its key."""

CHANNEL_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.npz", "word_dict.json", "preprocessing.json"),
    "validation": ("validation.npz",),
    "test": ("test.npz", "test_features.csv", "test_labels.csv"),
}
"""The files of each training channel (see DEVELOPERS.md)."""


def source_version(source: str | None) -> str:
    """Size and modification time of a local source file; ``remote`` for a URL, ``missing`` for no file."""
    source = str(source or "")
    if urlparse(source).scheme not in ("", "file"):
        return "remote"
    path = local_path(source)
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "missing"


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """The cache key of data stage ``stage`` called with ``inputs`` (parameter name → value, JSON values)."""
    parts: dict[str, Any] = {"stage": stage, "inputs": inputs, "code": code_fingerprint(*STAGE_CODE[stage])}
    if stage == DOWNLOAD:
        parts["source_version"] = source_version(inputs.get("source"))
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()}"


def data_stage_cache(stage: str) -> dict[str, Any]:
    """``@task`` options of a data stage: persisted results, cached on :func:`stage_key` (Prefect's
    ``cache_key_fn`` gets the task run context and the call's parameters by name)."""

    def cache_key(_context: Any, parameters: dict[str, Any]) -> str:
        return stage_key(stage, dict(parameters))

    cache_key.__qualname__ = f"stage_key[{stage}]"
    return {"cache_key_fn": cache_key, "persist_result": True}


def channel_artifacts(channels: dict[str, str], manifest_uri: str) -> list[str]:
    """Store URIs of every file of a published channel set (its channel folders' files and the manifest)."""
    files = [f"{channels[channel]}/{name}" for channel, names in CHANNEL_FILES.items() for name in names]
    return [*files, manifest_uri]
