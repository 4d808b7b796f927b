"""Atomic writes, hashing and local paths from file:// URIs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.io import atomic_dir, atomic_write_json, file_digest, local_path, read_json, sha256_file


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("file:///data/a%20b/x.tar.gz", Path("/data/a b/x.tar.gz")),
        ("/data/x.tar.gz", Path("/data/x.tar.gz")),
        ("relative/dir", Path("relative/dir")),
        ("s3://bucket/key", None),
        ("https://example.test/x.tar.gz", None),
    ],
)
def test_local_path_of_uris_and_plain_paths(value: str, expected: Path | None) -> None:
    assert local_path(value) == expected


def test_local_path_expands_the_home_folder() -> None:
    assert local_path("~/x") == Path.home() / "x"


def test_atomic_json_round_trip_and_digests(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"a": [1, 2], "b": 1}
    assert sha256_file(target) == hashlib.sha256(target.read_bytes()).hexdigest()
    assert file_digest(target, "md5") == hashlib.md5(target.read_bytes()).hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary file left behind


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("one")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "f").write_text("two")
        raise RuntimeError("crash")
    assert (target / "f").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
