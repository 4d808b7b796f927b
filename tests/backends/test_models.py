"""Resolving ``--model``: folders, archives, file:// and store URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.local.storage import LocalArtifactStore
from backends.models import resolve_model_dir
from core.config import Settings
from core.errors import SentiflowError
from tests.fixtures.tiny_model import TinyModel


def test_folder_is_used_as_is(tiny: TinyModel, settings: Settings) -> None:
    assert resolve_model_dir(str(tiny.model_dir), settings) == tiny.model_dir


def test_archive_is_unpacked_once_into_the_cache(tiny: TinyModel, settings: Settings) -> None:
    first = resolve_model_dir(str(tiny.tar_path), settings)
    assert first.parent == settings.cache_dir / "models" and (first / "model.pth").is_file()
    marker = first / "marker"
    marker.write_text("x")
    assert resolve_model_dir(tiny.tar_path.as_uri(), settings) == first and marker.exists()


def test_store_uri_of_the_local_store(tiny: TinyModel, settings: Settings) -> None:
    store = LocalArtifactStore(settings.store_dir)
    uri, _ = store.put_file(tiny.tar_path, "runs/x/model.tar.gz")
    assert (resolve_model_dir(uri, settings) / "model_info.json").is_file()


@pytest.mark.parametrize(
    ("artifact", "fragment"),
    [
        ("{tmp}/missing", "does not exist"),
        ("{tmp}/notes.txt", "neither a folder nor a .tar.gz"),
        ("s3://bucket/model.tar.gz", "not in the local artifact store"),
    ],
)
def test_bad_artifacts_are_user_errors(settings: Settings, tmp_path: Path, artifact: str, fragment: str) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SentiflowError, match=fragment):
        resolve_model_dir(artifact.format(tmp=tmp_path), settings)


def test_a_model_archive_bomb_is_refused_before_unpacking(settings: Settings, tmp_path: Path) -> None:
    import io
    import tarfile

    class Zeros(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            return bytes(size)

    bomb = tmp_path / "model.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:  # 160 MiB of zeros: past the ratio floor, ~1000:1
        info = tarfile.TarInfo("model.pth")
        info.size = 160 << 20
        tar.addfile(info, Zeros())
    with pytest.raises(SentiflowError, match=r"^model archive refused: model.tar.gz expands more than 50x"):
        resolve_model_dir(str(bomb), settings)
    assert not (settings.cache_dir / "models").exists() or not any((settings.cache_dir / "models").iterdir())
