"""The data stages' cache keys: one Prefect-free function, the one the tasks are cached on."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path
from typing import Any

import pytest

import tasks.data.keys as keys
from tasks.data.keys import DATA_STAGES, stage_key

INPUTS: dict[str, dict[str, Any]] = {
    "download": {"source": "https://example.org/imdb.tar.gz", "sha256": None, "backend": "local"},
    "load-dataset": {"archive_uri": "file:///s/archives/a/imdb.tar.gz", "archive_sha256": "a" * 64, "backend": "local"},
    "validate-dataset": {
        "dataset_uri": "file:///s/datasets/a/reviews.parquet",
        "expected_rows_per_split": 25000,
        "min_review_chars": 10,
        "max_review_chars": 20000,
        "backend": "local",
    },
    "prepare-channels": {
        "dataset_uri": "file:///s/datasets/a/reviews.parquet",
        "vocab_size": 5000,
        "max_len": 500,
        "validation_fraction": 0.1,
        "seed": 42,
        "max_reviews_per_class": None,
        "backend": "local",
        "tokenizer_version": "words-neg-punct-2",
    },
}


def data_tasks() -> dict[str, Any]:
    from tasks.data.download import download_task
    from tasks.data.load import load_task
    from tasks.data.prepare import prepare_task
    from tasks.data.validate import validate_task

    return {task.name: task for task in (download_task, load_task, validate_task, prepare_task)}


def test_each_data_task_is_cached_on_stage_key_of_its_name_and_parameters() -> None:
    tasks = data_tasks()
    assert tuple(tasks) == DATA_STAGES
    for name, task in tasks.items():
        assert set(inspect.signature(task.fn).parameters) == set(INPUTS[name]), name
        assert task.persist_result is True, name
        computed = task.cache_policy.compute_key(task_ctx=None, inputs=dict(INPUTS[name]), flow_parameters={})
        assert computed == stage_key(name, INPUTS[name]), name


def test_the_key_module_imports_no_prefect_and_no_stage_module() -> None:
    tree = ast.parse(Path(keys.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith(("prefect", "tasks.data.", "pandas"))}, imported


@pytest.mark.parametrize("stage", DATA_STAGES)
def test_a_key_is_stable_and_changes_with_every_input(stage: str) -> None:
    inputs = INPUTS[stage]
    key = stage_key(stage, dict(inputs))
    assert key == stage_key(stage, dict(reversed(list(inputs.items()))))  # order of parameters does not matter
    assert key.startswith(f"{stage}-") and "/" not in key
    for name, value in inputs.items():
        changed = {**inputs, name: f"{value}-other" if isinstance(value, str) or value is None else value + 1}
        assert stage_key(stage, changed) != key, name


def test_equal_inputs_of_two_stages_never_share_a_key() -> None:
    inputs = {"dataset_uri": "file:///s/d.parquet", "backend": "local"}
    assert stage_key("load-dataset", inputs) != stage_key("validate-dataset", inputs)


def test_a_key_changes_with_the_stage_code(monkeypatch: pytest.MonkeyPatch) -> None:
    before = stage_key("prepare-channels", INPUTS["prepare-channels"])
    monkeypatch.setattr(keys, "code_fingerprint", lambda *modules: "other code")
    assert stage_key("prepare-channels", INPUTS["prepare-channels"]) != before
    assert "model.preprocessing" in keys.STAGE_CODE["prepare-channels"]
    for stage, task in data_tasks().items():  # each stage's own module (hence its task's source) is in its key
        assert task.fn.__module__ in keys.STAGE_CODE[stage], stage


def test_a_local_source_rewritten_in_place_changes_the_download_key(tmp_path: Path) -> None:
    archive = tmp_path / "imdb.tar.gz"
    archive.write_bytes(b"one")
    inputs = {"source": str(archive), "sha256": None, "backend": "local"}
    first = stage_key("download", inputs)
    assert stage_key("download", inputs) == first
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert stage_key("download", inputs) != first
