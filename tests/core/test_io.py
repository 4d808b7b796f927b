"""Atomic writes, hashing, one-holder locks, full disks and local paths from file:// URIs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.io import (
    DiskFullError,
    atomic_dir,
    atomic_path,
    atomic_write_json,
    file_digest,
    file_lock,
    local_path,
    read_json,
    remove_temporary_siblings,
    sha256_file,
    temporary_siblings,
)


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


def test_atomic_dir_without_replace_keeps_the_entry_another_writer_published(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with atomic_dir(target, replace=False) as tmp:
        (tmp / "f").write_text("first")
    with atomic_dir(target, replace=False) as tmp:
        (tmp / "f").write_text("second")
    assert (target / "f").read_text() == "first" and temporary_siblings(target) == []


def test_leftovers_of_a_killed_writer_are_found_and_removed(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    (tmp_path / ".entry.abc123.tmp").mkdir()
    (tmp_path / ".entry.abc123.tmp" / "half.csv").write_text("1,2,")
    (tmp_path / ".other.x.tmp").mkdir()
    assert [p.name for p in remove_temporary_siblings(target)] == [".entry.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x.tmp"]


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "out" / "data.bin"
    message = r"no space left on the device holding .*out while writing data.bin"
    with pytest.raises(DiskFullError, match=message), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        no_space()
    with pytest.raises(DiskFullError, match="earlier results are intact"), atomic_dir(tmp_path / "dir") as tmp:
        (tmp / "a").write_text("partial")
        no_space()
    assert not target.exists() and temporary_siblings(target) == [] and temporary_siblings(tmp_path / "dir") == []


def test_file_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    lock = tmp_path / "state" / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        waits: list[str] = []
        started = time.monotonic()
        with file_lock(lock, "the test lock", waits.append):
            waited = time.monotonic() - started
            assert f"pid {os.getpid()}" in lock.read_text()
        assert holder.wait(timeout=30) == 0
        assert waited >= 0.5 and len(waits) == 1
        assert waits[0].startswith("waiting for the test lock: pid ") and str(holder.pid) in waits[0]
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from core.io import file_lock
with file_lock(Path(sys.argv[1]), "x"):
    print("locked", flush=True)
    time.sleep(1.0)
"""
