"""The up-to-date check of the data half (``flows.data``), server-free: result records written by Prefect's own
``ResultStore`` (JSON serializer, a local folder), artifacts as files in a local store. Whether the records a real
flow run writes are found is ``tests/sentiflow/cli/test_data_rerun_e2e.py``."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from flows import data
from tasks.data.keys import DATA_STAGES, stage_key

SHA = "ab" * 32


def write_record(results: Path, key: str, value: Any) -> None:
    """A result record exactly as Prefect persists a task's result (JSON serializer) under ``key``."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results)), serializer=JSONSerializer())
    store.persist_result_record(store.create_result_record(value, key=key))


def touch(settings: Settings, uri: str) -> None:
    from backends.local.storage import LocalArtifactStore

    store = LocalArtifactStore(settings.store_dir)
    path = store.path(store.key_from_uri(uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


@pytest.fixture
def cached(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """A complete set of the four data stages' records for ``source`` and their artifacts in the store."""
    from tasks.data.download import ArchiveRef
    from tasks.data.load import DatasetRef
    from tasks.data.prepare import ChannelSet

    source = tmp_path / "imdb.tar.gz"
    source.write_bytes(b"an archive")
    results = tmp_path / "results"
    store = settings.store_dir.as_uri()
    request = data.data_request(settings, str(source), None, None)
    archive = ArchiveRef(f"{store}/archives/{SHA}/imdb.tar.gz", str(source), SHA, 10, 0.1)
    dataset = DatasetRef(f"{store}/datasets/{SHA}/reviews.parquet", SHA, 400)
    validation = {"checks": 13, "report": "r", "data_docs": "d", "report_uri": f"{store}/validation/v/validation.json"}
    channels = ChannelSet(
        "k",
        {name: f"{store}/channels/k/{name}" for name in ("train", "validation", "test")},
        f"{store}/channels/k/manifest.json",
        {"train": 180, "validation": 20, "test": 200},
        60,
        0.5,
    )
    stages = {
        "download": (data.download_inputs(settings, request), archive),
        "load-dataset": (data.load_inputs(settings, archive.uri, SHA), dataset),
        "validate-dataset": (data.validate_inputs(settings, dataset.uri), validation),
        "prepare-channels": (data.prepare_inputs(settings, dataset.uri, None), channels),
    }
    for stage, (inputs, result) in stages.items():
        write_record(results, stage_key(stage, inputs), result)
        for uri in data.stage_artifacts(stage, result if isinstance(result, dict) else result.to_dict()):
            touch(settings, uri)
    return {"source": str(source), "results": results, "channels": channels, "archive": archive}


def check(settings: Settings, cached: dict[str, Any], **overrides: Any) -> dict[str, Any] | None:
    arguments = {"source": cached["source"], "sha256": None, "max_reviews_per_class": None, **overrides}
    return data.up_to_date(settings, results_dir=cached["results"], **arguments)


def test_the_flow_and_the_check_build_every_stage_call_from_the_same_functions() -> None:
    from tasks.data.download import download_task
    from tasks.data.load import load_task
    from tasks.data.prepare import prepare_task
    from tasks.data.validate import validate_task

    settings = Settings(home=Path("/tmp/unused"))
    request = data.data_request(settings, "https://example.org/a.tar.gz", None, 3)
    built = {
        download_task: data.download_inputs(settings, request),
        load_task: data.load_inputs(settings, "file:///a", SHA),
        validate_task: data.validate_inputs(settings, "file:///d"),
        prepare_task: data.prepare_inputs(settings, "file:///d", request.max_reviews_per_class),
    }
    for task, inputs in built.items():
        assert list(inputs) == list(inspect.signature(task.fn).parameters), task.name
    assert inspect.getsource(data).count("import prefect") == 0 and "from prefect" not in inspect.getsource(data)


def test_everything_cached_gives_the_summary_data_flow_returns(settings: Settings, cached: dict[str, Any]) -> None:
    summary = check(settings, cached)
    assert summary is not None
    assert summary["reused"] == dict.fromkeys(DATA_STAGES, True)
    assert summary["archive"] == cached["archive"].to_dict()
    assert summary["channels"] == cached["channels"].to_dict()
    assert summary["validation"]["checks"] == 13 and summary["max_reviews_per_class"] is None


def test_a_changed_parameter_or_source_means_the_flow_runs(settings: Settings, cached: dict[str, Any]) -> None:
    assert check(settings, cached, max_reviews_per_class=5) is None
    assert check(settings.model_copy(update={"vocab_size": 61}), cached) is None
    assert check(settings.model_copy(update={"min_review_chars": 11}), cached) is None
    assert check(settings, cached, source=cached["source"] + ".other") is None
    stat = os.stat(cached["source"])
    os.utime(cached["source"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten in place
    assert check(settings, cached) is None


def test_a_store_entry_gone_means_the_flow_runs(settings: Settings, cached: dict[str, Any]) -> None:
    from backends.local.storage import LocalArtifactStore

    assert check(settings, cached) is not None
    store = LocalArtifactStore(settings.store_dir)
    store.path(store.key_from_uri(cached["channels"].file_uri("test", "test_labels.csv"))).unlink()
    assert check(settings, cached) is None


def test_any_doubt_means_the_flow_runs(
    settings: Settings, cached: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.io import file_lock

    assert check(settings, cached) is not None
    assert check(settings.model_copy(update={"backend": "aws"}), cached) is None
    with monkeypatch.context() as patch:
        patch.setenv("PREFECT_TASKS_REFRESH_CACHE", "true")
        assert check(settings, cached) is None
    with monkeypatch.context() as patch:
        patch.setenv("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK", "s3-bucket/elsewhere")
        assert check(settings, cached) is None
    with file_lock(settings.state_dir / "run.lock", "the run lock"):  # another run is building
        assert check(settings, cached) is None
    assert check(settings, cached) is not None


def test_a_record_of_another_form_is_not_trusted(settings: Settings, cached: dict[str, Any]) -> None:
    request = data.data_request(settings, cached["source"], None, None)
    key = stage_key("download", data.download_inputs(settings, request))
    path = cached["results"] / key
    good = json.loads(path.read_text())
    assert data.cached_result(cached["results"], "download", key) == cached["archive"].to_dict()
    variants = {
        "expiring": {**good, "metadata": {**good["metadata"], "expiration": "2030-01-01T00:00:00Z"}},
        "another key": {**good, "metadata": {**good["metadata"], "storage_key": "download-other"}},
        "pickled": {**good, "metadata": {**good["metadata"], "serializer": {"type": "pickle"}}},
        "another class": {**good, "result": good["result"].replace("ArchiveRef", "Other")},
    }
    for name, record in variants.items():
        path.write_text(json.dumps(record))
        assert data.cached_result(cached["results"], "download", key) is None, name
        assert check(settings, cached) is None, name
    path.write_text(json.dumps(good)[:-20])  # a torn write
    assert data.cached_result(cached["results"], "download", key) is None
    path.write_text(json.dumps(good))
    assert check(settings, cached) is not None


def test_a_bad_flow_parameter_is_the_flows_one_line_error(settings: Settings, cached: dict[str, Any]) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_reviews_per_class=0"):
        check(settings, cached, max_reviews_per_class=0)
