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
    for name in ("roc.png", "confusion.png"):
        assert (tmp_path / "run" / name).read_bytes().startswith(b"\x89PNG")
    markdown = report_markdown(report, images)
    assert markdown.count("data:image/png;base64,") == 2 and "| accuracy |" in markdown
    assert [row["metric"] for row in table_rows(report)] == [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
    ]
