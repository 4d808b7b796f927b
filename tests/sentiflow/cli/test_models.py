"""``sentiflow models list`` on the local backend: versions, status, accuracy, reason, the live marker, JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import run_cli


def test_models_list_shows_status_metrics_and_the_live_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backends.base import get_registry
    from core.config import Settings

    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "models", "list")
    assert code == 0 and "no model versions on the local backend" in out

    registry = get_registry(Settings(home=tmp_path))
    registry.register("file:///s/m1.tar.gz", metrics_uri="file:///s/r1.json", accuracy=0.91)
    registry.approve(1)
    registry.register("file:///s/m2.tar.gz", accuracy=0.55)
    registry.reject(2, "quality gate: accuracy 0.5500 is below min_accuracy 0.8000")

    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "models", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["VERSION", "STATUS", "ACCURACY"]
    assert lines[1].startswith("* v1") and "Approved" in lines[1] and "0.9100" in lines[1]
    assert "file:///s/r1.json" in lines[1]
    assert lines[2].startswith("  v2") and "Rejected" in lines[2] and "below min_accuracy" in lines[2]
    assert "* = live: v1, but the API serves no endpoint now" in out

    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "models", "list", "--json")
    rows = json.loads(out)
    assert [(r["version"], r["status"], r["live"], r["endpoint"]) for r in rows] == [
        (1, "Approved", True, None),
        (2, "Rejected", False, None),
    ]


@pytest.mark.e2e
def test_models_list_on_aws_reads_the_model_registry(
    moto_world: Any, aws_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from backends.base import get_registry

    registry = get_registry(aws_settings)
    registry.register(f"s3://{moto_world.bucket}/sentiflow/m1.tar.gz", accuracy=0.9)
    registry.approve(1)
    monkeypatch.setenv("SENTIFLOW_BACKEND", "aws")
    for key, value in moto_world.settings_overrides().items():
        monkeypatch.setenv(f"SENTIFLOW_{key.upper()}", str(value))
    code, out, err = run_cli(monkeypatch, capsys, tmp_path / "another-machine", "models", "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["version"], row["status"], row["live"], row["accuracy"]) == (1, "Approved", True, 0.9)
    assert row["ref"].endswith(":model-package/sentiflow-models/1")
