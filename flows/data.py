"""The data half's wiring that needs no Prefect: each stage's inputs, the run lock, and the up-to-date check.

``flows.pipeline.prepare_data`` calls the data stages with the inputs built here; :func:`up_to_date` builds the very
same inputs, computes the very same cache keys (``tasks.data.keys.stage_key``, the function the tasks are cached
on) and reads the result records Prefect wrote under them in the local result storage — before Prefect is
imported. When all four records are there and every artifact they name is still in the store, nothing changed and
the CLI reports the reused stages without a flow run (no run appears in the Prefect UI). Any doubt — another backend
or result storage, a missing, expired or unreadable record, a record of an unexpected form, a missing artifact,
another run holding the run lock, ``PREFECT_TASKS_REFRESH_CACHE`` — answers ``None``: the normal flow run decides.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import file_lock
from tasks.data.keys import DATA_STAGES, DOWNLOAD, LOAD, PREPARE, VALIDATE, channel_artifacts, stage_key

# --- what the data stages are called with ------------------------------------------------------------------


def source_without_secrets(source: str | None) -> str | None:
    """A ``source`` flow parameter must not carry credentials: Prefect stores flow parameters in clear."""
    if source and "://" in source:
        from urllib.parse import urlsplit

        parts = urlsplit(source)
        if parts.username or parts.password or parts.query:
            raise ConfigError(
                "flow parameter source carries credentials (user:password@ or a signed ?query), which Prefect "
                "would store with the run in clear: set SENTIFLOW_DATA_URL in the environment of the worker instead"
            )
    return source


def checked_per_class(value: int | None) -> int | None:
    """The ``max_reviews_per_class`` flow parameter: an integer ≥ 1 or unset."""
    if value is not None and value < 1:
        raise ConfigError(
            f"flow parameter max_reviews_per_class={value!r} is invalid: it accepts an integer ≥ 1 (or unset)"
        )
    return value


@dataclass(frozen=True)
class DataRequest:
    """The data half's flow parameters, resolved against the settings."""

    source: str
    sha256: str | None
    max_reviews_per_class: int | None


def data_request(
    settings: Settings, source: str | None, sha256: str | None, max_reviews_per_class: int | None
) -> DataRequest:
    """The source (``SENTIFLOW_DATA_URL`` unless given; its pinned hash only for that URL) and the subsample."""
    source = source_without_secrets(source) or settings.data_url
    sha256 = sha256 or (settings.data_sha256 if source == settings.data_url else None)
    return DataRequest(source, sha256, checked_per_class(max_reviews_per_class))


def download_inputs(settings: Settings, request: DataRequest) -> dict[str, Any]:
    return {"source": request.source, "sha256": request.sha256, "backend": settings.backend}


def load_inputs(settings: Settings, archive_uri: str, archive_sha256: str) -> dict[str, Any]:
    return {"archive_uri": archive_uri, "archive_sha256": archive_sha256, "backend": settings.backend}


def validate_inputs(settings: Settings, dataset_uri: str) -> dict[str, Any]:
    return {
        "dataset_uri": dataset_uri,
        "expected_rows_per_split": settings.expected_rows_per_split,
        "min_review_chars": settings.min_review_chars,
        "max_review_chars": settings.max_review_chars,
        "backend": settings.backend,
    }


def prepare_inputs(settings: Settings, dataset_uri: str, max_reviews_per_class: int | None) -> dict[str, Any]:
    return {
        "dataset_uri": dataset_uri,
        "vocab_size": settings.vocab_size,
        "max_len": settings.max_len,
        "validation_fraction": settings.validation_fraction,
        "seed": settings.seed,
        "max_reviews_per_class": max_reviews_per_class,
        "backend": settings.backend,
        "tokenizer_version": settings.tokenizer_version,
    }


def stage_artifacts(stage: str, result: dict[str, Any]) -> list[str]:
    """The store URIs a data stage's result (as a dict: ``to_dict()`` or its record) hands on."""
    if stage == VALIDATE:
        return [result["report_uri"]]
    if stage == PREPARE:
        return channel_artifacts(result["channels"], result["manifest_uri"])
    return [result["uri"]]


def data_summary(
    archive: dict[str, Any],
    dataset: dict[str, Any],
    validation: dict[str, Any],
    channels: dict[str, Any],
    max_reviews_per_class: int | None,
) -> dict[str, Any]:
    """What the data half returns to later stages and to the summary."""
    return {
        "archive": archive,
        "dataset": dataset,
        "validation": validation,
        "channels": channels,
        "max_reviews_per_class": max_reviews_per_class,
    }


@contextlib.contextmanager
def run_lock(settings: Settings, busy: Callable[[str], Exception] | None = None) -> Iterator[None]:
    """One build (data, training, evaluation) at a time per SENTIFLOW_HOME: a second run waits for the first
    (with ``busy``, it raises ``busy(holder)`` instead of waiting)."""
    what = f"the run lock of SENTIFLOW_HOME={settings.home} (another sentiflow run is building)"
    with file_lock(settings.state_dir / "run.lock", what, print, busy=busy):
        yield


# --- the up-to-date check ------------------------------------------------------------------------------------

RESULT_CLASSES: dict[str, str | None] = {
    DOWNLOAD: "tasks.data.download.ArchiveRef",
    LOAD: "tasks.data.load.DatasetRef",
    VALIDATE: None,  # a plain dict
    PREPARE: "tasks.data.prepare.ChannelSet",
}
"""What Prefect's JSON serializer names as each data stage's result type (``{"__class__", "data"}``)."""


class _Busy(Exception):
    """Another run holds the run lock."""


def _plain(value: Any) -> bool:
    """JSON of plain values only: no object Prefect's serializer would have to rebuild."""
    if isinstance(value, dict):
        return "__class__" not in value and all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool)


def cached_result(results_dir: Path, stage: str, key: str) -> dict[str, Any] | None:
    """The result Prefect persisted for ``stage`` under ``key`` in a local result storage, as a dict of plain
    values; None when there is none, it expires, or it is not exactly the form this stage's results take."""
    try:
        path = results_dir / key
        record = json.loads(path.read_text(encoding="utf-8"))
        metadata, payload = record["metadata"], record["result"]
        if metadata.get("storage_key") not in (key, str(path)) or metadata.get("expiration") is not None:
            return None
        if (metadata.get("serializer") or {}).get("type") != "json" or not isinstance(payload, str):
            return None
        value = json.loads(payload)
        expected = RESULT_CLASSES[stage]
        if expected is not None:
            if not isinstance(value, dict) or set(value) != {"__class__", "data"} or value["__class__"] != expected:
                return None
            value = value["data"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, dict) and _plain(value) else None


def up_to_date(
    settings: Settings,
    source: str | None,
    sha256: str | None,
    max_reviews_per_class: int | None,
    results_dir: Path,
) -> dict[str, Any] | None:
    """The data half's summary (as ``data_flow`` returns it) when every data stage would be served from Prefect's
    cache with its artifacts still in the store; else None (run the flow). Never imports Prefect.

    ``results_dir`` is the local result storage's folder (``sentiflow.ops.storage.local_results_dir``). A bad flow
    parameter raises the same ConfigError the flow would."""
    if settings.backend != "local" or os.environ.get("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"):
        return None
    if os.environ.get("PREFECT_TASKS_REFRESH_CACHE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    request = data_request(settings, source, sha256, max_reviews_per_class)
    if not results_dir.is_dir():
        return None
    from backends.base import get_store

    store = get_store(settings)

    def hit(stage: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        result = cached_result(results_dir, stage, stage_key(stage, inputs))
        if result is None:
            return None
        try:
            uris = stage_artifacts(stage, result)
            present = all(store.exists(store.key_from_uri(uri)) for uri in uris)
        except (KeyError, TypeError, ValueError, OSError, SentiflowError):
            return None
        return result if present else None

    try:
        with run_lock(settings, busy=lambda holder: _Busy(holder)):
            archive = hit(DOWNLOAD, download_inputs(settings, request))
            if archive is None:
                return None
            dataset = hit(LOAD, load_inputs(settings, archive["uri"], archive["sha256"]))
            if dataset is None:
                return None
            validation = hit(VALIDATE, validate_inputs(settings, dataset["uri"]))
            channels = hit(PREPARE, prepare_inputs(settings, dataset["uri"], request.max_reviews_per_class))
            if validation is None or channels is None:
                return None
    except _Busy:
        return None
    summary = data_summary(archive, dataset, validation, channels, request.max_reviews_per_class)
    return {**summary, "reused": dict.fromkeys(DATA_STAGES, True)}
