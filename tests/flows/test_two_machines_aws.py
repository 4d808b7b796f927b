"""Two "machines" (two SENTIFLOW_HOMEs, nothing shared but the AWS account and the Prefect API) on the moto server:
what the pipeline, the gate, rollback and teardown need of each other lives in AWS — the model registry in
SageMaker Model Registry, endpoint state in endpoint tags, Prefect results in the S3 result-storage block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.moto_world import MotoWorld
from tests.fixtures.synthetic import write_archive
from tests.flows.test_pipeline_aws import play_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]


def machine(monkeypatch: pytest.MonkeyPatch, home: Path, world: MotoWorld, **extra: str) -> Any:
    """Switch this process to one machine: its own SENTIFLOW_HOME, the shared account; its Settings."""
    from core.config import get_settings

    environment = {
        "SENTIFLOW_HOME": str(home),
        "SENTIFLOW_BACKEND": "aws",
        "SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200",
        "SENTIFLOW_VOCAB_SIZE": "60",
        "SENTIFLOW_MAX_LEN": "80",
        "SENTIFLOW_EPOCHS": "3",
        "SENTIFLOW_MIN_ACCURACY": "0.6",
        "SENTIFLOW_MAX_REGRESSION": "1.0",
        "SENTIFLOW_PARITY_SAMPLE": "20",
        **extra,
    }
    environment |= {f"SENTIFLOW_{key.upper()}": str(value) for key, value in world.settings_overrides().items()}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = get_settings()
    assert settings.backend == "aws" and settings.home == home
    return settings


def s3_pipeline(settings: Any) -> Any:
    """The pipeline flow with its results in the aws backend's S3 result-storage block (what workers use)."""
    from prefect_aws import S3Bucket

    from flows.pipeline import pipeline
    from sentiflow.ops.storage import ensure_result_storage

    slug = ensure_result_storage(settings, make_default=False)
    return pipeline.with_options(result_storage=S3Bucket.load(slug.split("/", 1)[1]))


def test_a_second_machine_sees_the_first_ones_model_and_endpoint(
    moto_world: MotoWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.base import get_registry
    from tasks.deploy import rollback
    from tasks.teardown import run_teardown

    play_endpoints(moto_world, monkeypatch)
    archive = str(write_archive(tmp_path, per_class=100))
    home_a, home_b = tmp_path / "machine-a", tmp_path / "machine-b"

    settings_a = machine(monkeypatch, home_a, moto_world)
    first = s3_pipeline(settings_a)(source=archive, backend="aws")
    assert first["promoted"] and first["model"]["version"] == 1, first["gate"]
    assert "no model deployed yet" in first["gate"]["reason"]
    endpoint_a = first["promotion"]["endpoint"]["name"]
    model_a, accuracy_a = first["training"]["model_uri"], first["evaluation"]["model"]["accuracy"]
    results = moto_world.client("s3").list_objects_v2(Bucket=moto_world.bucket, Prefix="sentiflow/prefect-results/")
    assert results.get("KeyCount", 0) > 0  # the stage results went to S3, not to machine A's disk

    # machine B: a fresh SENTIFLOW_HOME; different hyperparameters, so a different model
    settings_b = machine(monkeypatch, home_b, moto_world, SENTIFLOW_EPOCHS="2")
    assert not home_b.exists() or not (home_b / "state" / "endpoints.db").exists()
    found = run_teardown(settings_b, print, idle_minutes=0, max_age_hours=0, dry_run=True)
    assert [item.name for item in found.items] == [endpoint_a]  # B's teardown finds A's endpoint (from AWS)
    second = s3_pipeline(settings_b)(source=archive, backend="aws")
    reused = second["reused"]  # A's stage results, read from the S3 result storage
    assert reused["load-dataset"] and reused["prepare-channels"] and not reused["train-model"], reused
    assert second["deployed_model"]["version"] == 1 and second["deployed_model"]["model_uri"] == model_a
    assert f"of the deployed model's {accuracy_a:.4f}" in second["gate"]["reason"]  # compared against A's model
    assert second["promoted"] and second["model"]["version"] == 2
    assert list(second["promotion"]["replaced"]) == [endpoint_a]  # B retired A's endpoint

    back = rollback(settings_b, print)  # B rolls back to A's model
    assert (back.version, back.rolled_back_from, back.endpoint.model_uri) == (1, 2, model_a)
    registry = get_registry(settings_b)
    assert [(m.version, m.status, m.live) for m in registry.list()] == [(1, "Approved", True), (2, "Approved", False)]
    assert registry.get(1).reason.startswith("rolled back from v2")

    # machine A again: it sees B's rollback endpoint and tears it down
    settings_a = machine(monkeypatch, home_a, moto_world)
    assert get_registry(settings_a).live().version == 1
    report = run_teardown(settings_a, print, idle_minutes=0, max_age_hours=0)
    assert report.deleted == [back.endpoint.name]  # (the aws API has no clear(): it keeps the name, warned)
    assert moto_world.client("sagemaker").list_endpoints()["Endpoints"] == []
    for home in (home_a, home_b):  # neither machine keeps a model registry of its own on aws
        db = home / "state" / "endpoints.db"
        assert not db.exists() or "models" not in _tables_with_rows(db)


def _tables_with_rows(db: Path) -> set[str]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table for table in tables if conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]}
