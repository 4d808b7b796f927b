"""Local batch transform: SageMaker Batch Transform layout, same numbers as the serving path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.local.storage import LocalArtifactStore
from backends.local.transform import LocalBatchTransformer
from core.config import Settings
from core.errors import SentiflowError
from model.inference import label_for, parse_csv_output
from tests.fixtures.tiny_model import TinyModel


def _csv(rows: np.ndarray) -> str:
    return "".join(",".join(str(v) for v in row) + "\n" for row in rows)


@pytest.fixture
def store(settings: Settings, tiny: TinyModel, tmp_path: Path) -> LocalArtifactStore:
    store = LocalArtifactStore(settings.store_dir)
    store.put_file(tiny.tar_path, "runs/r1/model/model.tar.gz")
    features = tmp_path / "test_features.csv"
    features.write_text(_csv(tiny.test_rows))
    store.put_file(features, "channels/test/test_features.csv")
    labelled = tmp_path / "test.csv"
    labelled.write_text(_csv(np.column_stack([tiny.test_labels, tiny.test_rows])))
    store.put_file(labelled, "channels/test/test.csv")
    return store


def test_one_out_file_per_input_with_the_model_scores(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel
) -> None:
    logs: list[str] = []
    transformer = LocalBatchTransformer(settings, store, batch_size=64)  # 200 rows → 4 mini-batches
    out_uri = transformer.transform(
        store.uri("runs/r1/model/model.tar.gz"),
        store.uri("channels/test/test_features.csv"),
        "runs/r1/transform",
        logs.append,
    )
    assert out_uri == store.uri("runs/r1/transform")
    assert store.list("runs/r1/transform") == ["runs/r1/transform/test_features.csv.out"]
    labels, scores = parse_csv_output(store.path("runs/r1/transform/test_features.csv.out").read_text())
    from model.inference import model_fn

    expected = model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert labels == [label_for(s) for s in scores]
    assert len(logs) == 1 and "200 records" in logs[0]


def test_prefix_input_scores_every_file(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel, tmp_path
) -> None:
    extra = tmp_path / "more.csv"
    extra.write_text(_csv(tiny.test_rows[:5]) + "\n\n")  # blank lines are not records
    store.put_file(extra, "batch/in/part-2.csv")
    store.put_file(extra, "batch/in/sub/part-3.csv")
    out_uri = LocalBatchTransformer(settings, store).transform(
        store.uri("runs/r1/model/model.tar.gz"), store.uri("batch/in"), store.uri("batch/out"), lambda _: None
    )
    assert out_uri == store.uri("batch/out")
    assert store.list("batch/out") == ["batch/out/part-2.csv.out", "batch/out/sub/part-3.csv.out"]
    assert len(store.path("batch/out/sub/part-3.csv.out").read_text().splitlines()) == 5


def test_labelled_rows_are_refused_naming_the_file(settings: Settings, store: LocalArtifactStore) -> None:
    with pytest.raises(SentiflowError, match=r"test\.csv, lines 1–200: text/csv row 1 has 41 ids"):
        LocalBatchTransformer(settings, store).transform(
            store.uri("runs/r1/model/model.tar.gz"),
            store.uri("channels/test/test.csv"),
            "out",
            lambda _: None,
        )


def test_empty_input_prefix_is_refused(settings: Settings, store: LocalArtifactStore) -> None:
    with pytest.raises(SentiflowError, match="holds no files"):
        LocalBatchTransformer(settings, store).transform(
            store.uri("runs/r1/model/model.tar.gz"), store.uri("nothing/here"), "out", lambda _: None
        )


def test_transformer_matches_the_protocol(settings: Settings, store: LocalArtifactStore) -> None:
    from backends.base import BatchTransformer

    transformer: Any = LocalBatchTransformer(settings, store)
    assert isinstance(transformer, BatchTransformer)
