"""Loading the aclImdb layout: the table, and clear errors for unsafe or broken archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from core.errors import DataError
from tasks.data.load import COLUMNS, load_aclimdb_dir, load_archive
from tests.fixtures.synthetic import write_aclimdb


def test_archive_becomes_one_sorted_table(synthetic_archive) -> None:
    frame = load_archive(synthetic_archive)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 400
    assert frame.groupby(["split", "label"]).size().tolist() == [100, 100, 100, 100]
    assert frame[frame.label == 1].rating.min() >= 7 and frame[frame.label == 0].rating.max() <= 4
    assert frame.iloc[0][["split", "label", "id"]].tolist() == ["test", 0, 0]


def test_folder_and_archive_give_the_same_table(tmp_path, synthetic_archive) -> None:
    base = write_aclimdb(tmp_path, per_class=100)  # same seed and size as the archive fixture
    assert load_aclimdb_dir(base).equals(load_archive(synthetic_archive))
    assert load_aclimdb_dir(tmp_path).equals(load_aclimdb_dir(base))


def _archive_with(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp_path / "crafted.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_path_traversal_is_refused(tmp_path) -> None:
    archive = _archive_with(tmp_path, [(tarfile.TarInfo("aclImdb/../../evil.txt"), b"x")])
    with pytest.raises(DataError, match="unsafe member.*leaves the extraction folder"):
        load_archive(archive)


def test_links_are_refused(tmp_path) -> None:
    link = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(DataError, match="is a link to '/etc/passwd'"):
        load_archive(_archive_with(tmp_path, [(link, None)]))


def test_badly_named_review_file(tmp_path) -> None:
    archive = _archive_with(tmp_path, [(tarfile.TarInfo("aclImdb/train/pos/great_review.txt"), b"x")])
    with pytest.raises(DataError, match="badly named review file 'aclImdb/train/pos/great_review.txt'"):
        load_archive(archive)


def test_truncated_archive(tmp_path, synthetic_archive) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(synthetic_archive.read_bytes()[: synthetic_archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt.*download again"):
        load_archive(truncated)


def test_archive_without_reviews(tmp_path) -> None:
    archive = _archive_with(tmp_path, [(tarfile.TarInfo("something/else.txt"), b"x")])
    with pytest.raises(DataError, match="holds no aclImdb review files"):
        load_archive(archive)


def test_not_an_aclimdb_folder(tmp_path) -> None:
    with pytest.raises(DataError, match="is not an aclImdb folder"):
        load_aclimdb_dir(tmp_path)
