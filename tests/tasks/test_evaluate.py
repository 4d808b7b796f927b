"""The evaluate and quality-gate stages, wired in a flow as the pipeline wires them (inputs from the store)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_model import TinyModel


@pytest.mark.e2e
def test_tasks_in_a_flow_write_report_and_artifacts(
    settings, tiny: TinyModel, tmp_path: Path, prefect_api: str
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from backends.local.storage import LocalArtifactStore
    from backends.local.transform import LocalBatchTransformer
    from model.preprocessing import Preprocessor, encode_many
    from tasks.evaluate import evaluate_task
    from tasks.gate import gate_task

    store = LocalArtifactStore(settings.store_dir)
    word_dict = Preprocessor.from_dir(tiny.model_dir).word_dict
    train_rows = encode_many(tiny.train_tokens, word_dict, tiny.test_rows.shape[1] - 1)
    files = {
        "train/train.csv": np.column_stack([tiny.train_labels, train_rows]),
        "test/test.csv": np.column_stack([tiny.test_labels, tiny.test_rows]),
        "test/test_features.csv": tiny.test_rows,
    }
    for relative, rows in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(tmp_path / relative, rows, fmt="%d", delimiter=",")
        store.put_file(tmp_path / relative, f"channels/e2e/{relative}")
    model_uri, _ = store.put_file(tiny.tar_path, "training/e2e/model.tar.gz")
    output_uri = LocalBatchTransformer(settings, store).transform(
        model_uri, store.uri("channels/e2e/test/test_features.csv"), "evaluations/e2e/transform", print
    )

    @flow(name="evaluate-e2e")
    def evaluate_flow() -> tuple[dict, dict]:
        report = evaluate_task(
            store.uri("channels/e2e/train/train.csv"),
            store.uri("channels/e2e/test/test.csv"),
            output_uri,
            model_uri,
            "evaluations/e2e",
            "local",
        )
        return report, gate_task(report["model"]["accuracy"], None, 0.5, 0.005)

    report, decision = evaluate_flow()
    assert report["model"]["n"] == 200 and "baseline" in report
    assert report["uri"] == store.uri("evaluations/e2e/evaluation.json")
    assert json.loads(store.path("evaluations/e2e/evaluation.json").read_text())["model"] == report["model"]
    assert any(p.suffix == ".png" for p in store.path("evaluations/e2e").iterdir())
    assert decision["promote"] and "no model deployed" in decision["reason"]
    with get_client(sync_client=True) as client:
        keys = {artifact.key for artifact in client.read_artifacts()}
    assert {"evaluation-metrics", "evaluation-report", "evaluation-models", "behaviour"} <= keys
    assert 0 < report["behaviour"]["pass_rate"] <= 1 and report["behaviour"]["total"] >= 50


def test_the_evaluate_stage_reads_npz_channels_and_the_older_csv(tiny: TinyModel, tmp_path: Path) -> None:
    from core.errors import SentiflowError
    from model.channels import Channel, write_channel
    from tasks.evaluate import read_labelled_channel

    channel = Channel.from_rows(tiny.test_rows, tiny.test_labels)
    write_channel(tmp_path / "test.npz", channel)
    np.savetxt(tmp_path / "test.csv", np.column_stack([tiny.test_labels, tiny.test_rows]), fmt="%d", delimiter=",")
    for name in ("test.npz", "test.csv"):
        read = read_labelled_channel(tmp_path / name)
        assert (read.labels == tiny.test_labels).all() and (read.ids == channel.ids).all(), name
    np.savetxt(tmp_path / "features.csv", tiny.test_rows[:, :3], fmt="%d", delimiter=",")
    with pytest.raises(SentiflowError, match=r"features.csv is unreadable .*; re-run data preparation"):
        read_labelled_channel(tmp_path / "features.csv")


def test_the_behaviour_suite_runs_on_the_stored_model_archive(settings, tiny: TinyModel) -> None:
    from backends.local.storage import LocalArtifactStore
    from tasks.evaluate import model_behaviour

    store = LocalArtifactStore(settings.store_dir)
    model_uri, _ = store.put_file(tiny.tar_path, "training/behaviour/model.tar.gz")
    behaviour = model_behaviour(model_uri, settings)
    checks = {check["name"]: check for check in behaviour["checks"]}
    assert checks["markup and casing"]["pass_rate"] == 1.0 and behaviour["pass_rate"] >= 0.8
    assert behaviour["passed"] == sum(check["passed"] for check in behaviour["checks"])
    assert len(list((settings.cache_dir / "models").iterdir())) == 1  # unpacked once, into the models cache


def test_the_behaviour_suite_refuses_a_model_archive_that_expands_too_far(settings, tmp_path: Path) -> None:
    import io
    import tarfile

    from backends.local.storage import LocalArtifactStore
    from core.errors import SentiflowError
    from tasks.evaluate import model_behaviour

    class Zeros(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            return bytes(size)

    bomb = tmp_path / "model.tar.gz"
    with tarfile.open(bomb, "w:gz") as archive:  # 160 MiB of zeros in ~160 KiB: past the expansion-ratio cap
        member = tarfile.TarInfo("model.pth")
        member.size = 160 << 20
        archive.addfile(member, Zeros())
    store = LocalArtifactStore(settings.store_dir)
    model_uri, _ = store.put_file(bomb, "training/bomb/model.tar.gz")
    with pytest.raises(SentiflowError, match="model archive refused"):
        model_behaviour(model_uri, settings)
    assert not (settings.cache_dir / "models").exists() or not any((settings.cache_dir / "models").iterdir())


def test_the_deployed_model_row_comes_from_its_own_report(tmp_path: Path) -> None:
    from backends.local.storage import LocalArtifactStore
    from evaluation.report import side_by_side
    from tasks.evaluate import deployed_comparison

    store = LocalArtifactStore(tmp_path / "store")
    report = {"model": {"accuracy": 0.91, "f1": 0.905, "roc_auc": 0.97}, "behaviour": {"pass_rate": 0.9}}
    (tmp_path / "evaluation.json").write_text(json.dumps(report))
    uri, _ = store.put_file(tmp_path / "evaluation.json", "evaluations/old/evaluation.json")
    deployed = {"version": 3, "model_uri": "file:///m.tar.gz", "accuracy": 0.5, "metrics_uri": uri}

    (row,) = deployed_comparison(store, deployed)
    assert row["name"] == "deployed model v3" and row["accuracy"] == 0.91 and row["behaviour_pass_rate"] == 0.9
    table = side_by_side({"model": {"accuracy": 0.92, "f1": 0.92, "roc_auc": 0.97}, "compared": [row]})
    assert table[-1]["model"] == "deployed model v3" and table[-1]["f1"] == "0.9050"

    gone = deployed_comparison(store, {**deployed, "metrics_uri": store.uri("evaluations/missing.json")})
    assert gone[0]["accuracy"] == 0.5 and gone[0]["source"] == "model registry"  # the registry's figure
    assert deployed_comparison(store, None) == []
