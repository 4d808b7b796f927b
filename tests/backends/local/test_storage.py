"""The local artifact store: URIs, hash-skipping uploads, and keys that cannot escape the root."""

from __future__ import annotations

import pytest

from backends.local.storage import LocalArtifactStore
from core.errors import SentiflowError


def test_put_get_and_skip_identical(tmp_path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    source = tmp_path / "a.txt"
    source.write_text("hello")
    uri, sent = store.put_file(source, "x/a.txt")
    assert sent and uri.startswith("file://") and store.key_from_uri(uri) == "x/a.txt"
    assert store.put_file(source, "x/a.txt") == (uri, False)
    source.write_text("hello!")
    assert store.put_file(source, "x/a.txt")[1]
    assert store.get_file("x/a.txt", tmp_path / "copy.txt").read_text() == "hello!"
    assert store.exists("x/a.txt") and store.list("x") == ["x/a.txt"]


def test_keys_and_uris_outside_the_store_are_refused(tmp_path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(SentiflowError, match="outside the store"):
        store.path("../elsewhere")
    with pytest.raises(SentiflowError, match="not a local store URI"):
        store.key_from_uri("s3://bucket/key")
    with pytest.raises(SentiflowError, match="does not exist"):
        store.get_file("missing", tmp_path / "m")
