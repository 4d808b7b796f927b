"""Stage 1 — download the IMDB archive from http(s), file://, a plain path or s3://, verified by hash.

Downloads are cached by source and expected hash, so a rerun downloads nothing. A file that fails its hash is
deleted and reported, never used. Writes are atomic. :func:`download_archive` does the work; ``download_task`` is
the Prefect stage around it.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from prefect import task
from prefect.logging import get_run_logger

from core.config import OFFICIAL_DATA_MD5, OFFICIAL_DATA_URL, Settings
from core.errors import DataError, SentiflowError
from core.io import atomic_path, atomic_write_json, file_digest, local_path, read_json
from tasks.policies import NETWORK_RETRIES, STAGE_CACHE_POLICY


@dataclass(frozen=True)
class DownloadedArchive:
    path: str
    source: str
    sha256: str
    size: int
    cached: bool
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def expected_hash(source: str, sha256: str | None) -> tuple[str, str] | None:
    """``(algorithm, hex)`` the archive must match: the given sha256, or the official md5 for the official URL."""
    if sha256:
        value = sha256.lower().removeprefix("sha256:")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise SentiflowError(f"--sha256 {sha256!r} is not a 64-digit hex sha256; copy it from `sha256sum FILE`")
        return "sha256", value
    if source.rstrip("/") == OFFICIAL_DATA_URL:
        return "md5", OFFICIAL_DATA_MD5
    return None


def _entry_dir(settings: Settings, source: str, pinned: tuple[str, str] | None) -> Path:
    key = hashlib.sha256(f"{source}\0{pinned}".encode()).hexdigest()[:20]
    return settings.cache_dir / "downloads" / key


def _file_name(source: str) -> str:
    name = Path(unquote(urlparse(source).path)).name
    return name or "archive.tar.gz"


def _fetch_http(source: str, target: Path, pinned: tuple[str, str] | None) -> None:
    import pooch

    known = f"{pinned[0]}:{pinned[1]}" if pinned else None
    downloader = pooch.HTTPDownloader(progressbar=True, timeout=60)
    try:
        pooch.retrieve(source, known_hash=known, fname=target.name, path=target.parent, downloader=downloader)
    except ValueError as error:  # pooch: hash mismatch (it already removed the file)
        raise DataError(f"download of {source} failed its hash check: {error}") from None


def _fetch_s3(source: str, target: Path) -> None:
    import boto3

    parsed = urlparse(source)
    with atomic_path(target) as tmp:
        boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(tmp))


def _fetch_file(source: str, target: Path) -> None:
    path = local_path(source) or Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"data source {source!r} does not exist; pass --source with an archive path or URL")
    with atomic_path(target) as tmp:
        shutil.copyfile(path, tmp)


def _verify(target: Path, source: str, pinned: tuple[str, str] | None) -> str:
    sha256 = file_digest(target, "sha256")
    if pinned:
        algorithm, want = pinned
        got = sha256 if algorithm == "sha256" else file_digest(target, algorithm)
        if got != want:
            target.unlink(missing_ok=True)
            raise DataError(
                f"archive from {source} has {algorithm} {got}, expected {want}; the file was deleted. "
                "Check the source, or pass the right --sha256"
            )
    return sha256


def download_archive(settings: Settings, source: str | None = None, sha256: str | None = None) -> DownloadedArchive:
    """Fetch ``source`` (default ``settings.data_url``) into the download cache and verify it."""
    started = time.perf_counter()
    source = source or settings.data_url
    sha256 = sha256 or (settings.data_sha256 if source == settings.data_url else None)
    pinned = expected_hash(source, sha256)
    entry = _entry_dir(settings, source, pinned)
    target = entry / _file_name(source)
    record = entry / "download.json"
    if record.is_file() and target.is_file():
        meta = read_json(record)
        if meta.get("size") == target.stat().st_size:
            return DownloadedArchive(str(target), source, meta["sha256"], meta["size"], True, 0.0)
    entry.mkdir(parents=True, exist_ok=True)
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        _fetch_http(source, target, pinned)
    elif scheme == "s3":
        _fetch_s3(source, target)
    elif scheme in ("", "file") or Path(source).exists():
        _fetch_file(source, target)
    else:
        raise SentiflowError(f"unsupported data source {source!r}: use http(s)://, file://, s3:// or a local path")
    digest = _verify(target, source, pinned)
    size = target.stat().st_size
    atomic_write_json(record, {"source": source, "sha256": digest, "size": size, "pinned": pinned})
    return DownloadedArchive(str(target), source, digest, size, False, time.perf_counter() - started)


# --- the Prefect task ----------------------------------------------------------------------------------


@task(
    name="download",
    cache_policy=STAGE_CACHE_POLICY,
    persist_result=True,
    timeout_seconds=3600,
    **NETWORK_RETRIES,
)
def download_task(settings: Settings, source: str | None, sha256: str | None) -> DownloadedArchive:
    """Fetch and verify the IMDB archive (cached by source + hash)."""
    logger = get_run_logger()
    result = download_archive(settings, source, sha256)
    if result.cached:
        logger.info("download: cache hit for %s (%s, %.1f MB)", result.source, result.sha256[:12], result.size / 1e6)
    else:
        logger.info("download: fetched %s in %.1f s (sha256 %s)", result.source, result.seconds, result.sha256)
    return result
