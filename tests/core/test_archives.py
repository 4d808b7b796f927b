"""Archive caps (core.archives): a decompression bomb or an unsafe member is refused before extraction."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from core.archives import IMDB_LIMITS, MODEL_LIMITS, ArchiveLimits, ArchiveRefused, check_tar

MiB = 1 << 20


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _bomb(path: Path, size: int = 64 * MiB) -> Path:
    """One member of ``size`` zero bytes: gzip makes it about a thousandth of that."""

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_a_decompression_bomb_is_refused_quickly_with_a_clear_error(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < MiB
    started = time.perf_counter()
    with pytest.raises(ArchiveRefused, match=r"bomb.tar.gz expands more than 20x .* refused as a decompression bomb"):
        check_tar(bomb, IMDB_LIMITS)
    assert time.perf_counter() - started < 10


def test_a_normal_archive_passes_with_its_figures(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tar.gz", [("aclImdb/train/pos/0_9.txt", b"a fine film"), ("aclImdb/README", b"x")])
    stats = check_tar(archive, IMDB_LIMITS)
    assert stats.members == 2 and stats.file_bytes == 12 and stats.largest_member == 11


@pytest.mark.parametrize(
    ("limits", "members", "message"),
    [
        (ArchiveLimits(2, MiB, MiB, 20), [("a", b"1"), ("b", b"2"), ("c", b"3")], "more than 2 members"),
        (ArchiveLimits(10, 4, MiB, 20), [("a", b"12345")], "over the 4-byte cap per member"),
        (ArchiveLimits(10, MiB, 6, 20), [("a", b"1234"), ("b", b"1234")], "more than 6 bytes"),
        (MODEL_LIMITS, [("../evil", b"x")], "outside the extraction folder"),
        (MODEL_LIMITS, [("/etc/evil", b"x")], "outside the extraction folder"),
    ],
)
def test_each_cap_refuses(tmp_path: Path, limits: ArchiveLimits, members: list, message: str) -> None:
    with pytest.raises(ArchiveRefused, match=message):
        check_tar(_tar(tmp_path / "a.tar.gz", members), limits)


def test_links_and_non_archives_are_refused(tmp_path: Path) -> None:
    linked = tmp_path / "link.tar.gz"
    with tarfile.open(linked, "w:gz") as tar:
        info = tarfile.TarInfo("model.pth")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ArchiveRefused, match="is a link"):
        check_tar(linked, MODEL_LIMITS)
    (tmp_path / "text.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(ArchiveRefused, match="not a readable tar archive"):
        check_tar(tmp_path / "text.tar.gz", MODEL_LIMITS)


def test_a_model_with_a_mostly_zero_ngram_table_passes(tmp_path: Path) -> None:
    """nb-lstm's 4.2M-float table trained on little data is mostly 0: ~1000:1, still a model training wrote."""

    path = tmp_path / "model.tar.gz"
    table = bytearray(4 * (1 << 22))
    table[::4096] = b"\x01" * len(table[::4096])
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo("model.pth")
        member.size = len(table)
        archive.addfile(member, io.BytesIO(bytes(table)))
    stats = check_tar(path, MODEL_LIMITS)
    assert stats.ratio > 50 and stats.file_bytes == 4 * (1 << 22)
