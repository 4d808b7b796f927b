"""Download stage: sources, hash verification, the archive in the store, and never keeping a bad file."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from backends.local.storage import LocalArtifactStore
from core.config import OFFICIAL_DATA_MD5, OFFICIAL_DATA_URL
from core.errors import DataError, SentiflowError
from tasks.data.download import archive_key, download_archive, expected_hash
from tasks.data.keys import source_version


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.store_dir)


def test_plain_path_is_verified_and_stored_under_its_hash(store, synthetic_archive) -> None:
    digest = _sha256(synthetic_archive)
    result = download_archive(store, str(synthetic_archive), digest)
    assert result.sha256 == digest and result.size == synthetic_archive.stat().st_size
    assert result.uri == store.uri(archive_key(digest, str(synthetic_archive)))
    assert store.path(store.key_from_uri(result.uri)).read_bytes() == synthetic_archive.read_bytes()
    assert result.artifacts() == [result.uri]


def test_file_url_source(store, synthetic_archive) -> None:
    result = download_archive(store, synthetic_archive.as_uri(), None)
    assert result.sha256 == _sha256(synthetic_archive)


def test_hash_mismatch_is_reported_and_nothing_is_stored(store, synthetic_archive) -> None:
    with pytest.raises(DataError, match="expected 0{64}.*deleted"):
        download_archive(store, str(synthetic_archive), "0" * 64)
    assert not store.root.exists() or not any(p.is_file() for p in store.root.rglob("*"))


def test_missing_source_names_the_fix(store, tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist; pass --source"):
        download_archive(store, str(tmp_path / "nope.tar.gz"), None)


def test_bad_sha256_argument(store, synthetic_archive) -> None:
    with pytest.raises(SentiflowError, match="not a 64-digit hex sha256"):
        download_archive(store, str(synthetic_archive), "xyz")


def test_official_url_is_pinned_to_its_md5() -> None:
    assert expected_hash(OFFICIAL_DATA_URL, None) == ("md5", OFFICIAL_DATA_MD5)
    assert expected_hash("https://example.org/a.tar.gz", None) is None


def test_a_local_source_rewritten_in_place_gets_a_new_cache_key(tmp_path) -> None:
    archive = tmp_path / "imdb.tar.gz"
    archive.write_bytes(b"one")
    first = source_version(str(archive))
    assert source_version(archive.as_uri()) == first
    archive.write_bytes(b"other content")
    assert source_version(str(archive)) != first
    assert source_version("https://example.org/a.tar.gz") == "remote"
    assert source_version(str(tmp_path / "gone.tar.gz")) == "missing"


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
def test_http_download_with_hash(store, synthetic_archive, http_root) -> None:
    root, base = http_root
    (root / "imdb.tar.gz").write_bytes(synthetic_archive.read_bytes())
    result = download_archive(store, f"{base}/imdb.tar.gz", _sha256(synthetic_archive))
    assert result.sha256 == _sha256(synthetic_archive) and result.uri.endswith("/imdb.tar.gz")


@pytest.mark.e2e
def test_http_hash_mismatch_leaves_nothing(store, synthetic_archive, http_root) -> None:
    root, base = http_root
    (root / "imdb.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="hash"):
        download_archive(store, f"{base}/imdb.tar.gz", _sha256(synthetic_archive))
    assert not store.root.exists() or not any(p.is_file() for p in store.root.rglob("*"))


@pytest.mark.e2e
def test_s3_source_through_the_moto_server(store, synthetic_archive, aws_env) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="imdb-mirror")
    s3.upload_file(str(synthetic_archive), "imdb-mirror", "data/aclImdb.tar.gz")
    result = download_archive(store, "s3://imdb-mirror/data/aclImdb.tar.gz", _sha256(synthetic_archive))
    assert store.path(store.key_from_uri(result.uri)).read_bytes() == synthetic_archive.read_bytes()


PLANTED = ("PLANTED-PW", "PLANTED-SIG")


def _planted_url(base: str, name: str) -> str:
    host = base.removeprefix("http://")
    return f"http://sentiuser:PLANTED-PW@{host}/{name}?X-Amz-Signature=PLANTED-SIG"


@pytest.mark.e2e
def test_a_source_url_with_credentials_is_never_echoed(store, synthetic_archive, http_root, caplog) -> None:
    """Userinfo and a signed query reach the server, but not the result, the errors or pooch's log lines."""
    import logging

    import pooch

    root, base = http_root
    (root / "imdb.tar.gz").write_bytes(synthetic_archive.read_bytes())
    pooch.get_logger().addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            result = download_archive(store, _planted_url(base, "imdb.tar.gz"), _sha256(synthetic_archive))
            with pytest.raises(DataError) as missing:
                download_archive(store, _planted_url(base, "missing.tar.gz"), None)
            with pytest.raises(DataError) as mismatch:
                download_archive(store, _planted_url(base, "imdb.tar.gz"), "0" * 64)
    finally:
        pooch.get_logger().removeHandler(caplog.handler)
    assert result.source == f"{base}/imdb.tar.gz"
    assert "answered HTTP 404" in str(missing.value) and "hash check" in str(mismatch.value)
    assert "Downloading data from" in caplog.text  # pooch did log: the line is redacted, not dropped
    for text in (repr(result), str(missing.value), str(mismatch.value), caplog.text):
        assert not any(secret in text for secret in PLANTED), text


def test_a_decompression_bomb_is_refused_and_not_stored(store, tmp_path) -> None:
    import io
    import tarfile

    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(DataError, match=r"archive from .*bomb.tar.gz refused: .*decompression bomb"):
        download_archive(store, str(bomb), None)
    assert not store.root.exists() or not any(p.is_file() for p in store.root.rglob("*"))


def test_an_unreachable_source_is_a_transient_error_that_names_the_fix(store) -> None:
    from core.errors import TransientError

    port = 1  # tcpmux: nothing listens there, so the connection is refused at once
    with pytest.raises(TransientError) as failure:
        download_archive(store, f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz", "0" * 64)
    message = str(failure.value)
    assert message.startswith(f"download of http://127.0.0.1:{port}/aclImdb_v1.tar.gz failed (ConnectionError)")
    assert "--source / SENTIFLOW_DATA_URL" in message
