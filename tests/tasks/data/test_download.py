"""Download stage: sources, hash verification, caching, and never keeping a bad file."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from core.config import OFFICIAL_DATA_MD5, OFFICIAL_DATA_URL
from core.errors import DataError, SentiflowError
from tasks.data.download import download_archive, expected_hash


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_path_is_verified_and_cached(settings, synthetic_archive) -> None:
    first = download_archive(settings, str(synthetic_archive), _sha256(synthetic_archive))
    assert not first.cached and Path(first.path).read_bytes() == synthetic_archive.read_bytes()
    second = download_archive(settings, str(synthetic_archive), _sha256(synthetic_archive))
    assert second.cached and second.path == first.path and second.sha256 == first.sha256


def test_file_url_source(settings, synthetic_archive) -> None:
    result = download_archive(settings, synthetic_archive.as_uri(), None)
    assert result.sha256 == _sha256(synthetic_archive)


def test_hash_mismatch_is_reported_and_the_file_deleted(settings, synthetic_archive) -> None:
    with pytest.raises(DataError, match="expected 0{64}.*deleted"):
        download_archive(settings, str(synthetic_archive), "0" * 64)
    assert not any(p.is_file() and p.suffix == ".gz" for p in settings.cache_dir.rglob("*"))


def test_missing_source_names_the_fix(settings, tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist; pass --source"):
        download_archive(settings, str(tmp_path / "nope.tar.gz"), None)


def test_bad_sha256_argument(settings, synthetic_archive) -> None:
    with pytest.raises(SentiflowError, match="not a 64-digit hex sha256"):
        download_archive(settings, str(synthetic_archive), "xyz")


def test_official_url_is_pinned_to_its_md5() -> None:
    assert expected_hash(OFFICIAL_DATA_URL, None) == ("md5", OFFICIAL_DATA_MD5)
    assert expected_hash("https://example.org/a.tar.gz", None) is None


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.e2e
def test_http_download_with_hash_and_cache(settings, synthetic_archive, http_root) -> None:
    root, base = http_root
    (root / "imdb.tar.gz").write_bytes(synthetic_archive.read_bytes())
    result = download_archive(settings, f"{base}/imdb.tar.gz", _sha256(synthetic_archive))
    assert not result.cached and result.sha256 == _sha256(synthetic_archive)
    (root / "imdb.tar.gz").unlink()  # a rerun must not touch the network
    assert download_archive(settings, f"{base}/imdb.tar.gz", _sha256(synthetic_archive)).cached


@pytest.mark.e2e
def test_http_hash_mismatch_leaves_nothing(settings, synthetic_archive, http_root) -> None:
    root, base = http_root
    (root / "imdb.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="hash"):
        download_archive(settings, f"{base}/imdb.tar.gz", _sha256(synthetic_archive))
    assert not any(p.is_file() and p.name.startswith("imdb") for p in settings.cache_dir.rglob("*"))


@pytest.mark.e2e
def test_s3_source_through_the_moto_server(settings, synthetic_archive, aws_env) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="imdb-mirror")
    s3.upload_file(str(synthetic_archive), "imdb-mirror", "data/aclImdb.tar.gz")
    result = download_archive(settings, "s3://imdb-mirror/data/aclImdb.tar.gz", _sha256(synthetic_archive))
    assert not result.cached and Path(result.path).read_bytes() == synthetic_archive.read_bytes()
    assert download_archive(settings, "s3://imdb-mirror/data/aclImdb.tar.gz", _sha256(synthetic_archive)).cached
