"""Local batch transform: an endpoint server fed MultiRecord mini-batches of whole lines, as the Batch Transform agent
feeds the container; same numbers as the model, SageMaker's output layout, failures that name their lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from backends.local.storage import LocalArtifactStore
from backends.local.transform import LocalBatchTransformer, mini_batches
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


def model_uri(store: LocalArtifactStore) -> str:
    return store.uri("runs/r1/model/model.tar.gz")


# --- the mini-batches ------------------------------------------------------------------------------------------


def test_mini_batches_pack_whole_lines_up_to_the_payload_limit(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"aaaa\nbbbb\n\n  \ncccc\ndddd")  # 5 bytes a line; blank lines are not records
    batches = list(mini_batches(path, 10, "file:///in.csv"))
    assert batches == [([1, 2], b"aaaa\nbbbb\n"), ([5, 6], b"cccc\ndddd\n")]
    assert list(mini_batches(path, 14, "x")) == [([1, 2], b"aaaa\nbbbb\n"), ([5, 6], b"cccc\ndddd\n")]
    assert [numbers for numbers, _ in mini_batches(path, 15, "x")] == [[1, 2, 5], [6]]
    assert [numbers for numbers, _ in mini_batches(path, 5, "x")] == [[1], [2], [5], [6]]
    with pytest.raises(SentiflowError, match=r"file:///in\.csv, line 1: the record has 5 bytes, more than Max"):
        list(mini_batches(path, 4, "file:///in.csv"))


def test_the_payload_limit_is_a_setting(settings: Settings, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    assert LocalBatchTransformer(settings, store).max_payload_bytes == 6 * 1024 * 1024
    assert (
        LocalBatchTransformer(settings.with_overrides(transform_max_payload_mb=2), store).max_payload_bytes == 2 << 20
    )


def test_transformer_matches_the_protocol(settings: Settings, tmp_path: Path) -> None:
    from backends.base import BatchTransformer

    transformer: Any = LocalBatchTransformer(settings, LocalArtifactStore(tmp_path / "store"))
    assert isinstance(transformer, BatchTransformer)


def test_empty_input_prefix_is_refused(settings: Settings, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(SentiflowError, match="holds no files"):
        LocalBatchTransformer(settings, store).transform("x", store.uri("nothing/here"), "out", lambda _: None)


# --- against the endpoint server -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_one_out_file_per_input_with_the_model_scores(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel
) -> None:
    logs: list[str] = []
    transformer = LocalBatchTransformer(settings, store, max_payload_bytes=4096)  # 200 rows → several mini-batches
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out_uri = transformer.transform(
        model_uri(store), store.uri("channels/test/test_features.csv"), "runs/r1/transform", logs.append
    )
    assert out_uri == store.uri("runs/r1/transform")
    assert store.list("runs/r1/transform") == ["runs/r1/transform/test_features.csv.out"]
    text = store.path("runs/r1/transform/test_features.csv.out").read_text()
    labels, scores = parse_csv_output(text)
    from model.inference import model_fn

    expected = model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert labels == [label_for(s) for s in scores]
    batches = int(logs[0].split("(")[1].split()[0])
    assert batches > 1 and text.count("\n\n") == batches  # AssembleWith=Line: a newline after each answer
    assert len(logs) == 1 and "200 records of test_features.csv" in logs[0]
    after = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert after <= before  # the endpoint server was stopped


@pytest.mark.e2e
def test_prefix_input_scores_every_file(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel, tmp_path: Path
) -> None:
    extra = tmp_path / "more.csv"
    extra.write_text(_csv(tiny.test_rows[:5]) + "\n\n")  # blank lines are not records
    store.put_file(extra, "batch/in/part-2.csv")
    store.put_file(extra, "batch/in/sub/part-3.csv")
    out_uri = LocalBatchTransformer(settings, store).transform(
        model_uri(store), store.uri("batch/in"), store.uri("batch/out"), lambda _: None
    )
    assert out_uri == store.uri("batch/out")
    assert store.list("batch/out") == ["batch/out/part-2.csv.out", "batch/out/sub/part-3.csv.out"]
    labels, _ = parse_csv_output(store.path("batch/out/sub/part-3.csv.out").read_text())
    assert len(labels) == 5


@pytest.mark.e2e
def test_a_failing_mini_batch_names_the_file_its_lines_and_the_models_error(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel, tmp_path: Path
) -> None:
    good = _csv(tiny.test_rows[:30])
    bad = tmp_path / "bad.csv"
    bad.write_text(good + "1,2,not-a-number\n" + good)
    store.put_file(bad, "batch/bad/part-1.csv")
    transformer = LocalBatchTransformer(settings, store, max_payload_bytes=len(good.encode()) + 200)
    with pytest.raises(SentiflowError) as caught:
        transformer.transform(model_uri(store), store.uri("batch/bad"), "batch/bad-out", lambda _: None)
    message = str(caught.value)
    assert "part-1.csv, lines 1–" in message and "HTTP 400" in message and "line 31 of the file" in message
    assert "\n" not in message
    assert store.list("batch/bad-out") == []  # no .out for a file that did not succeed


@pytest.mark.e2e
def test_labelled_rows_are_refused_naming_the_file(settings: Settings, store: LocalArtifactStore) -> None:
    with pytest.raises(SentiflowError, match=r"test\.csv, lines 1–200: the model answered HTTP 400"):
        LocalBatchTransformer(settings, store).transform(
            model_uri(store), store.uri("channels/test/test.csv"), "out", lambda _: None
        )


@pytest.mark.e2e
def test_a_mini_batch_over_5_mb_in_one_request(
    settings: Settings, store: LocalArtifactStore, tiny: TinyModel, tmp_path: Path
) -> None:
    """Batch Transform packs up to MaxPayloadInMB (6 MiB) into one POST: the endpoint takes a body of over 5 MB."""
    one_copy = _csv(tiny.test_rows).encode()
    copies = (5_200_000 // len(one_copy)) + 1
    big = tmp_path / "big.csv"
    big.write_bytes(one_copy * copies)
    assert 5_000_000 < big.stat().st_size < 6 << 20
    store.put_file(big, "batch/big/big.csv")
    logs: list[str] = []
    LocalBatchTransformer(settings, store).transform(
        model_uri(store), store.uri("batch/big"), "batch/big-out", logs.append
    )
    assert f"{200 * copies} records of big.csv (1 mini-batches)" in logs[0]
    labels, scores = parse_csv_output(store.path("batch/big-out/big.csv.out").read_text())
    assert len(labels) == 200 * copies
    np.testing.assert_allclose(scores[:200], scores[-200:], atol=1e-6)  # the same rows, the same scores
