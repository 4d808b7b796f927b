"""The evaluation report: evaluation.json, the plots, the markdown and table rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.baseline import tfidf_baseline
from evaluation.report import EVALUATION_FILE, report_markdown, table_rows, write_report
from tests.fixtures.tiny_model import TinyModel


@pytest.fixture(scope="module")
def batch_scores(tiny: TinyModel) -> np.ndarray:
    from model.inference import model_fn

    return model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)


def test_write_report_writes_json_and_plots(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    baseline = tfidf_baseline(tiny.train_tokens, tiny.train_labels, tiny.test_tokens, tiny.test_labels)
    report, images = write_report(tiny.test_labels, batch_scores, tmp_path / "run", baseline, model_uri="file:///m")
    written = json.loads((tmp_path / "run" / EVALUATION_FILE).read_text())
    assert written == json.loads(json.dumps(report))
    assert written["model"]["n"] == 200 and written["model_uri"] == "file:///m"
    assert written["lift"]["accuracy"] == pytest.approx(written["model"]["accuracy"] - baseline.metrics["accuracy"])
    for name in ("roc.png", "confusion.png", "reliability.png"):
        assert (tmp_path / "run" / name).read_bytes().startswith(b"\x89PNG")
    markdown = report_markdown(report, images)
    assert markdown.count("data:image/png;base64,") == 3 and "| accuracy |" in markdown
    assert [row["metric"] for row in table_rows(report)] == [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
    ]


def test_side_by_side_rows_behaviour_and_calibration(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    from evaluation.behaviour import run_suite
    from evaluation.plots import reliability_bins
    from evaluation.report import side_by_side
    from model.artifact import load_artifact

    baseline = tfidf_baseline(tiny.train_tokens, tiny.train_labels, tiny.test_tokens, tiny.test_labels)
    behaviour = run_suite(load_artifact(tiny.model_dir).predict_texts).to_dict()
    deployed = {"name": "deployed model", "accuracy": 0.88, "f1": 0.87, "roc_auc": 0.95, "source": "registry"}
    report, images = write_report(
        tiny.test_labels, batch_scores, tmp_path / "run", baseline, behaviour=behaviour, compared=[deployed]
    )
    rows = side_by_side(report)
    assert [row["model"] for row in rows] == ["new model", "TF-IDF baseline (same tokens)", "deployed model"]
    assert rows[0]["behaviour pass rate"] == f"{behaviour['pass_rate']:.4f}" and rows[1]["behaviour pass rate"] == "-"
    assert rows[2]["accuracy"] == "0.8800" and rows[2]["behaviour pass rate"] == "-"
    markdown = report_markdown(report, images)
    assert "## Side by side" in markdown and "negated praise is negative" in markdown
    assert 0 <= report["calibration"]["model"]["ece"] <= 1 and "ece" in report["calibration"]["baseline"]
    # a perfectly calibrated set has ECE 0, a confidently wrong one ECE near 1
    assert reliability_bins(np.array([0, 1]), np.array([0.0, 1.0]))[1] == 0.0
    assert reliability_bins(np.array([0, 1]), np.array([0.99, 0.01]))[1] > 0.95
