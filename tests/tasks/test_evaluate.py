"""The evaluate, serving-parity and quality-gate stages, wired in a flow as the pipeline wires them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.report import EVALUATION_FILE
from tests.fixtures.tiny_model import TinyModel


@pytest.mark.e2e
def test_tasks_in_a_flow_write_report_and_artifacts(
    settings, tiny: TinyModel, tmp_path: Path, prefect_api: str
) -> None:
    import pandas as pd
    from prefect import flow
    from prefect.client.orchestration import get_client

    from backends.local.storage import LocalArtifactStore
    from backends.local.transform import LocalBatchTransformer
    from tasks.evaluate import evaluate_task
    from tasks.gate import gate_task
    from tasks.parity import parity_task

    channels = tmp_path / "channels"
    for name, labels, rows in (
        ("train", tiny.train_labels, None),
        ("test", tiny.test_labels, tiny.test_rows),
    ):
        (channels / name).mkdir(parents=True)
        if rows is None:
            from model.preprocessing import Preprocessor, encode_many

            word_dict = Preprocessor.from_dir(tiny.model_dir).word_dict
            rows = encode_many(tiny.train_tokens, word_dict, tiny.test_rows.shape[1] - 1)
        np.savetxt(channels / name / f"{name}.csv", np.column_stack([labels, rows]), fmt="%d", delimiter=",")
    np.savetxt(channels / "test" / "test_features.csv", tiny.test_rows, fmt="%d", delimiter=",")
    dataset = tmp_path / "reviews.parquet"
    pd.DataFrame(
        {
            "split": "test",
            "label": tiny.test_labels,
            "id": range(len(tiny.test_labels)),
            "rating": 0,
            "review": tiny.test_reviews,
        }
    ).to_parquet(dataset)
    store = LocalArtifactStore(settings.store_dir)
    model_uri, _ = store.put_file(tiny.tar_path, "runs/e2e/model.tar.gz")
    features_uri, _ = store.put_file(channels / "test" / "test_features.csv", "channels/test/test_features.csv")
    output_uri = LocalBatchTransformer(settings, store).transform(model_uri, features_uri, "runs/e2e/out", print)

    @flow(name="evaluate-e2e")
    def evaluate_flow() -> tuple[dict, dict, dict]:
        report = evaluate_task(
            settings, str(channels), output_uri, str(tmp_path / "run"), model_uri, "runs/e2e/evaluation.json"
        )
        parity = parity_task(settings, model_uri, output_uri, str(dataset), sample=50)
        decision = gate_task(report["model"]["accuracy"], None, 0.5, 0.005, parity["passed"])
        return report, parity, decision

    report, parity, decision = evaluate_flow()
    assert report["model"]["n"] == 200 and "baseline" in report
    assert report["uri"] == store.uri("runs/e2e/evaluation.json")
    assert json.loads((tmp_path / "run" / EVALUATION_FILE).read_text())["model"] == report["model"]
    assert parity["passed"] and parity["checked"] == 50
    assert decision == {"promote": True, "reason": decision["reason"]} and "no model deployed" in decision["reason"]
    with get_client(sync_client=True) as client:
        keys = {artifact.key for artifact in client.read_artifacts()}
    assert {"evaluation-metrics", "evaluation-report"} <= keys
