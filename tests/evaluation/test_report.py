"""Evaluation: metrics, baseline, report files, quality gate and the serving-parity check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentiflow.errors import SentiflowError
from tasks.baseline import rows_to_tokens, tfidf_baseline
from tasks.evaluate import EVALUATION_FILE, evaluate, load_transform_scores, report_markdown, table_rows
from tasks.gate import gate
from tasks.metrics import classification_metrics
from tasks.parity import parity_check
from tests.serve.tiny_model import TinyModel, shuffled_copy


@pytest.fixture(scope="module")
def batch_scores(tiny: TinyModel) -> np.ndarray:
    from serve.inference import model_fn

    return model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_on_known_inputs() -> None:
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    scores = [0.9, 0.8, 0.4, 0.3, 0.6, 0.1, 0.5, 0.49]  # tp=3 (0.9, 0.8, 0.5), fn=1, fp=1 (0.6), tn=3
    metrics = classification_metrics(labels, scores)
    assert metrics["confusion_matrix"] == [[3, 1], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    # pairs (pos, neg) ranked correctly: 16 pairs, 0.4 < 0.49 / 0.6 and 0.5 < 0.6 are wrong → 13/16
    assert metrics["roc_auc"] == pytest.approx(13 / 16)


def test_metrics_edge_cases() -> None:
    all_negative = classification_metrics([0, 0], [0.1, 0.2])
    assert all_negative["precision"] == 0.0 and all_negative["roc_auc"] is None and all_negative["accuracy"] == 1
    with pytest.raises(SentiflowError, match="2 labels and 3 scores"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(SentiflowError, match="0 or 1"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(SentiflowError, match=r"\[0, 1\]"):
        classification_metrics([0, 1], [0.1, 1.2])


# --- gate --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "deployed", "promote", "fragment"),
    [
        (0.86, None, True, "no model deployed"),
        (0.85, None, True, "≥ min_accuracy"),
        (0.849, None, False, "below min_accuracy 0.8500"),
        (0.88, 0.884, True, "within 0.0050"),
        (0.879, 0.885, False, "below the deployed model's 0.8850"),
        (0.90, 0.86, True, "within"),
        (0.84, 0.80, False, "below min_accuracy"),
    ],
)
def test_gate_decisions(candidate: float, deployed: float | None, promote: bool, fragment: str) -> None:
    decision = gate(candidate, deployed, min_accuracy=0.85, max_regression=0.005)
    assert decision.promote is promote
    assert fragment in decision.reason


def test_gate_boundary_of_regression_is_inclusive() -> None:
    assert gate(0.875, 0.88, 0.85, 0.005).promote


# --- baseline and report ---------------------------------------------------------------------------


def test_baseline_on_tokens_and_id_rows(tiny: TinyModel) -> None:
    on_words = tfidf_baseline(tiny.train_tokens, tiny.train_labels, tiny.test_tokens, tiny.test_labels)
    assert on_words.metrics["accuracy"] > 0.9 and len(on_words.scores) == len(tiny.test_labels)
    assert rows_to_tokens(np.array([[2, 7, 9, 0], [0, 0, 0, 0]])) == [["7", "9"], []]
    on_ids = tfidf_baseline(
        [["5", "6"], ["7", "8"]] * 5, [1, 0] * 5, rows_to_tokens(tiny.test_rows[:4]), tiny.test_labels[:4]
    )
    assert on_ids.metrics["n"] == 4


def test_evaluate_writes_report_and_plots(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    baseline = tfidf_baseline(tiny.train_tokens, tiny.train_labels, tiny.test_tokens, tiny.test_labels)
    report, images = evaluate(tiny.test_labels, batch_scores, tmp_path / "run", baseline, model_uri="file:///m")
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


def test_load_transform_scores_reads_the_out_file(settings, tmp_path: Path) -> None:
    from backends.local.storage import LocalArtifactStore

    store = LocalArtifactStore(settings.store_dir)
    out = tmp_path / "x.out"
    out.write_text("positive,0.75\nnegative,0.25\n")
    store.put_file(out, "runs/r/transform/test_features.csv.out")
    labels, scores = load_transform_scores(store, store.uri("runs/r/transform"))
    assert labels == ["positive", "negative"] and scores.tolist() == [0.75, 0.25]
    with pytest.raises(SentiflowError, match="does not exist"):
        load_transform_scores(store, store.uri("runs/other"))


# --- serving parity --------------------------------------------------------------------------------


def test_parity_passes_for_the_real_preprocessing(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    result = parity_check(tiny.model_dir, tiny.test_reviews, batch_scores, sample=150)
    assert result.passed and result.checked == 150 and result.mismatched == 0
    assert result.max_abs_diff <= 1e-5


def test_parity_catches_shuffled_word_dict(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    broken = shuffled_copy(tiny.model_dir, tmp_path / "broken")
    result = parity_check(broken, tiny.test_reviews, batch_scores, sample=1000)
    assert not result.passed and result.checked == 200
    assert result.mismatched > 100 and len(result.examples) == 10
    example = result.examples[0]
    assert {"index", "review", "batch_label", "batch_score", "serving"} <= set(example)
    assert "FAILED" in result.summary


def test_parity_flags_a_single_different_label(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    labels = ["positive" if s >= 0.5 else "negative" for s in batch_scores]
    labels[17] = "negative" if labels[17] == "positive" else "positive"
    result = parity_check(tiny.model_dir, tiny.test_reviews, batch_scores, sample=200, batch_labels=labels)
    assert result.mismatched == 1 and result.examples[0]["index"] == 17


def test_parity_refuses_misaligned_inputs(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    with pytest.raises(SentiflowError, match="same test rows in the same order"):
        parity_check(tiny.model_dir, tiny.test_reviews[:-1], batch_scores, sample=10)


# --- the Prefect tasks, wired like the flow wires them ---------------------------------------------


@pytest.mark.e2e
def test_tasks_in_a_flow_write_report_and_artifacts(settings, tiny: TinyModel, tmp_path: Path):
    import pandas as pd
    from prefect import flow
    from prefect.client.orchestration import get_client

    from backends.local.storage import LocalArtifactStore
    from backends.local.transform import LocalBatchTransformer
    from tasks.evaluate import evaluate_task, gate_task, parity_task

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
