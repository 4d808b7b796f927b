"""Caps on archives sentiflow reads (decompression bombs, unsafe members), checked streaming, without extracting.

Reads member headers in stream mode (``r|*``): each header is checked *before* its data is decompressed, so a
bomb is refused after decompressing at most the limits' worth of data. Use before ``extractall(filter="data")``
(which handles path traversal and special files itself; this check refuses them too, with a clear message).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import SentiflowError

MiB = 1 << 20


class ArchiveRefused(SentiflowError):
    """The archive breaks a cap or holds an unsafe member (message names the archive, the member and the cap)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one archive: members, bytes per member, total bytes, expansion ratio."""

    max_members: int
    max_member_bytes: int
    max_total_bytes: int
    max_ratio: float  # uncompressed file bytes / archive bytes
    ratio_floor_bytes: int = 16 * MiB  # below this total, the ratio is not checked (tiny archives compress well)
    allow_links: bool = False


# aclImdb_v1_labeled.tar.gz (shared mirror): 28.6 MB, 50,014 members, 69.7 MB of files, largest 0.9 MB, ratio 2.43.
# The official aclImdb_v1.tar.gz (84 MB) also has the unsup split and the *.feat files (tens of MB each): the
# caps leave room for it; a bomb (gzip reaches ~1000:1) is refused by the ratio long before the size caps.
IMDB_LIMITS = ArchiveLimits(max_members=250_000, max_member_bytes=256 * MiB, max_total_bytes=1024 * MiB, max_ratio=20)
# model.tar.gz: model.pth, a few JSON files, code/ (tens of .py files). nb-lstm's n-gram table is 4.2M floats
# (17 MB) that a model trained on little data leaves mostly 0: gzip packs it ~66:1 (the test suite's small models),
# a trained-on-nothing table ~1000:1. So the ratio counts only above 128 MiB; the size caps bound the rest.
MODEL_LIMITS = ArchiveLimits(
    max_members=2_000,
    max_member_bytes=512 * MiB,
    max_total_bytes=1024 * MiB,
    max_ratio=50,
    ratio_floor_bytes=128 * MiB,
)


@dataclass(frozen=True)
class ArchiveStats:
    """What a checked archive holds."""

    members: int
    file_bytes: int
    largest_member: int
    compressed_bytes: int

    @property
    def ratio(self) -> float:
        return self.file_bytes / max(1, self.compressed_bytes)


def check_tar(path: Path | str, limits: ArchiveLimits) -> ArchiveStats:
    """Stream ``path``'s member headers and refuse it (:class:`ArchiveRefused`, one line) if it breaks ``limits``.

    Each header is checked before its data is decompressed, so a bomb costs at most the caps' worth of work.
    """
    path = Path(path)
    compressed = os.path.getsize(path)
    members = total = largest = 0
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                members += 1
                where = f"{path.name}: member {member.name!r}"
                if members > limits.max_members:
                    raise ArchiveRefused(
                        f"{path.name} has more than {limits.max_members:,} members; refused (not the expected archive?)"
                    )
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ArchiveRefused(f"{where} points outside the extraction folder; refused")
                if member.issym() or member.islnk():
                    if not limits.allow_links:
                        raise ArchiveRefused(f"{where} is a link ({member.linkname!r}); links are refused")
                    continue
                if member.isdir():
                    continue
                if not member.isfile() or member.issparse():
                    raise ArchiveRefused(f"{where} is not a regular file (type {member.type!r}); refused")
                if member.size > limits.max_member_bytes:
                    raise ArchiveRefused(
                        f"{where} would expand to {member.size:,} bytes, over the {limits.max_member_bytes:,}-byte "
                        "cap per member; refused (a decompression bomb or the wrong file)"
                    )
                total += member.size
                largest = max(largest, member.size)
                if total > limits.max_total_bytes:
                    raise ArchiveRefused(
                        f"{path.name} would expand to more than {limits.max_total_bytes:,} bytes; refused"
                    )
                if total > limits.ratio_floor_bytes and total > limits.max_ratio * compressed:
                    raise ArchiveRefused(
                        f"{path.name} expands more than {limits.max_ratio:g}x its {compressed:,} bytes "
                        f"(at least {total:,} bytes by member {member.name!r}); refused as a decompression bomb"
                    )
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveRefused(f"{path.name} is not a readable tar archive: {error}") from None
    return ArchiveStats(members, total, largest, compressed)
