"""Crash-safe file writing, content hashing, one-holder locks and local paths from ``file://`` URIs.

Everything sentiflow writes goes to a temporary sibling first and is renamed into place, so a crash never leaves
a half-written file or store entry behind; a full disk is one clear :class:`~core.errors.SentiflowError` that
names the target, with nothing of the write left over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from core.errors import SentiflowError

_CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
TEMP_SUFFIX = ".tmp"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file with any hashlib algorithm (``md5``, ``sha256``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    return file_digest(path, "sha256")


def sha256_text(*parts: str) -> str:
    """Hex sha256 of the given strings joined by NUL."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class DiskFullError(SentiflowError):
    """No space left while writing a file or folder; nothing of it was kept."""


@contextlib.contextmanager
def _disk_full_is_a_user_error(target: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno not in _NO_SPACE and "No space left on device" not in str(error):
            raise
        raise DiskFullError(
            f"no space left on the device holding {target.parent} while writing {target.name}; nothing was "
            "written and earlier results are intact. Free some space (or point SENTIFLOW_HOME at a larger disk) "
            "and run again"
        ) from None


def temporary_siblings(target: Path) -> list[Path]:
    """Leftovers of interrupted atomic writes of ``target`` (``.<name>.*.tmp`` beside it)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"))


def remove_temporary_siblings(target: Path) -> list[Path]:
    """Delete what interrupted writes of ``target`` left (a killed process cannot clean up after itself).

    Only safe while no other process writes ``target`` (hold the run lock, see :func:`file_lock`)."""
    removed = temporary_siblings(target)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed to ``target``, on error removed."""
    target = Path(target)
    with _disk_full_is_a_user_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, payload: Any) -> Path:
    return atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it becomes ``target`` as a whole.

    ``replace=False`` is for content-addressed entries: if ``target`` already exists (another writer published
    the same content first), it is kept and this copy discarded, so a reader never sees it missing.
    """
    target = Path(target)
    with _disk_full_is_a_user_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
        try:
            yield tmp
            if not replace:
                with contextlib.suppress(FileExistsError, OSError):
                    os.rename(tmp, target)  # fails when a non-empty target exists: keep that one
                if target.is_dir():
                    return
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def local_path(uri: str) -> Path | None:
    """The local path a ``file://`` URI or a plain path names (``~`` expanded); None for any other scheme
    (``http(s)://``, ``s3://`` …). The one place sentiflow parses ``file://`` URIs."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme:
        return Path(uri).expanduser()
    return None


# --- one holder at a time ---------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(
    path: Path,
    what: str,
    on_wait: Callable[[str], None] | None = None,
    busy: Callable[[str], Exception] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block; wait for the current holder if there is one.

    The kernel releases the lock when its holder exits, even on ``kill -9``, so a lock is never stale.
    ``on_wait`` gets one line naming the holder (pid, since when) before this process starts waiting; with
    ``busy``, this process does not wait but raises ``busy(holder)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if busy is not None:
                raise busy(holder) from None
            if on_wait is not None:
                on_wait(f"waiting for {what}: {holder} holds {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
