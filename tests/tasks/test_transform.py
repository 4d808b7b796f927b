"""Reading the batch transform's output back."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import SentiflowError
from tasks.transform import load_transform_scores


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
