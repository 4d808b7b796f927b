"""Stage 1 — fetch the IMDB archive from http(s), file://, a plain path or s3://, verify it, put it in the store.

A source URL may carry credentials (``user:pass@``, a signed query): only its redacted form
(``core.redact.redact_url``: scheme, host, path) is ever logged, put in an error, or recorded (``ArchiveRef.source``,
the task's result record). Before it is stored, the archive's members are checked against caps
(``core.archives.IMDB_LIMITS``): a decompression bomb or an unsafe member is refused with one line.

The archive lands in the artifact store under its own hash (``archives/<sha256>/<file name>``), so every later
stage — on any worker — reads it from there. A file that fails its hash is deleted and reported, never stored.

Reruns are Prefect's cache: the stage is keyed (``tasks.data.keys.stage_key``) on the source, the expected hash and
the backend (for a local file also its size and modification time, so an archive rewritten in place is fetched
again).
:func:`download_archive` does the work; ``download_task`` is the Prefect stage around it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import task

from core.archives import IMDB_LIMITS, ArchiveRefused, check_tar
from core.config import OFFICIAL_DATA_MD5, OFFICIAL_DATA_URL
from core.errors import DataError, SentiflowError, TransientError
from core.io import atomic_path, file_digest, local_path
from core.redact import SecretFilter, redact_url
from tasks.data.keys import DOWNLOAD, data_stage_cache
from tasks.policies import network_stage

OFFLINE_HINT = "check the network, or pass a local copy with --source / SENTIFLOW_DATA_URL"


@dataclass(frozen=True)
class ArchiveRef:
    """The verified archive in the artifact store (``source`` is the redacted source URL)."""

    uri: str
    source: str
    sha256: str
    size: int
    seconds: float

    def artifacts(self) -> list[str]:
        return [self.uri]

    def to_dict(self) -> dict[str, Any]:
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


def file_name(source: str) -> str:
    name = Path(unquote(urlparse(source).path)).name
    return name or "archive.tar.gz"


def archive_key(sha256: str, source: str) -> str:
    """Where an archive with this content lives in the store."""
    return f"archives/{sha256}/{file_name(source)}"


def _quiet_pooch() -> None:
    """Redact pooch's own log lines (``Downloading data from '<URL>'``): its logger is not registered with
    :mod:`logging`, so ``logging.getLogger("pooch")`` would not reach it."""
    import pooch

    logger = pooch.get_logger()
    if not any(isinstance(item, SecretFilter) for item in logger.filters):
        logger.addFilter(SecretFilter())


def _fetch_http(source: str, target: Path, pinned: tuple[str, str] | None) -> None:
    import pooch
    import requests

    _quiet_pooch()
    shown = redact_url(source)
    known = f"{pinned[0]}:{pinned[1]}" if pinned else None
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=60)
    try:
        pooch.retrieve(source, known_hash=known, fname=target.name, path=target.parent, downloader=downloader)
    except ValueError as error:  # pooch: hash mismatch (it already removed the file); its text names no URL
        raise DataError(f"download of {shown} failed its hash check: {error}") from None
    except requests.HTTPError as error:  # its text holds the full URL: never passed on
        status = error.response.status_code if error.response is not None else 0
        if 400 <= status < 500:
            raise DataError(f"download of {shown} answered HTTP {status}; check the URL and its credentials") from None
        raise TransientError(f"download of {shown} answered HTTP {status}; {OFFLINE_HINT}") from None  # retried
    except requests.RequestException as error:
        raise TransientError(f"download of {shown} failed ({type(error).__name__}); {OFFLINE_HINT}") from None


def _fetch_s3(source: str, target: Path) -> None:
    import boto3

    parsed = urlparse(source)
    with atomic_path(target) as tmp:
        boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(tmp))


def _fetch_file(source: str, target: Path) -> None:
    path = local_path(source) or Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"data source {redact_url(source)!r} does not exist; pass --source with an archive path or URL")
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
                f"archive from {redact_url(source)} has {algorithm} {got}, expected {want}; the file was deleted. "
                "Check the source, or pass the right --sha256"
            )
    return sha256


def fetch(source: str, target: Path, pinned: tuple[str, str] | None) -> str:
    """Fetch ``source`` to ``target``, verify its hash and its caps; returns its sha256."""
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        _fetch_http(source, target, pinned)
    elif scheme == "s3":
        _fetch_s3(source, target)
    elif scheme in ("", "file"):
        _fetch_file(source, target)
    else:
        raise SentiflowError(
            f"unsupported data source {redact_url(source)!r}: use http(s)://, file://, s3:// or a local path"
        )
    digest = _verify(target, source, pinned)
    try:
        check_tar(target, IMDB_LIMITS)
    except ArchiveRefused as error:
        target.unlink(missing_ok=True)
        raise DataError(f"archive from {redact_url(source)} refused: {error}") from None
    return digest


def download_archive(store: Any, source: str, sha256: str | None = None) -> ArchiveRef:
    """Fetch ``source``, verify it and put it into ``store`` (an object with the same content is not rewritten)."""
    started = time.perf_counter()
    pinned = expected_hash(source, sha256)
    with tempfile.TemporaryDirectory(prefix="sentiflow-download-") as scratch:
        target = Path(scratch) / file_name(source)
        digest = fetch(source, target, pinned)
        size = target.stat().st_size
        uri, _ = store.put_file(target, archive_key(digest, source))
    return ArchiveRef(uri, redact_url(source), digest, size, round(time.perf_counter() - started, 3))


# --- the Prefect task ----------------------------------------------------------------------------------


@task(**network_stage(DOWNLOAD), **data_stage_cache(DOWNLOAD))
def download_task(source: str, sha256: str | None, backend: str) -> ArchiveRef:
    """Fetch and verify the IMDB archive into the artifact store."""
    from prefect.logging import get_run_logger

    from backends.base import get_store
    from core.config import get_settings

    store = get_store(get_settings("parameter", backend=backend))
    result = download_archive(store, source, sha256)
    get_run_logger().info(
        "download: %s in %.1f s (%.1f MB, sha256 %s) → %s",
        result.source, result.seconds, result.size / 1e6, result.sha256, result.uri,
    )  # fmt: skip
    return result
