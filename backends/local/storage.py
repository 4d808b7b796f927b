"""The local artifact store: a folder under ``SENTIFLOW_HOME`` (``<home>/store``).

Keys are ``/``-separated paths below the root; URIs are ``file://`` URLs. Writes are atomic and skipped when an
object with the same content is already there.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from core.errors import SentiflowError
from core.io import atomic_dir, atomic_path, local_path, remove_temporary_siblings, sha256_file


class LocalArtifactStore:
    """Artifact store backed by a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """Local path of ``key``; refuses keys that would leave the store."""
        target = (self.root / key.strip("/")).resolve()
        if target != self.root and self.root not in target.parents:
            raise SentiflowError(f"artifact key {key!r} points outside the store {self.root}; use a relative key")
        return target

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def key_from_uri(self, uri: str) -> str:
        path = local_path(uri) if urlparse(uri).scheme == "file" else None
        if path is None:
            raise SentiflowError(f"{uri!r} is not a local store URI (file://); was it made by the aws backend?")
        path = path.resolve()
        if path != self.root and self.root not in path.parents:
            raise SentiflowError(f"{uri!r} is outside the local store {self.root}")
        return path.relative_to(self.root).as_posix()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put_file(self, path: Path, key: str) -> tuple[str, bool]:
        target = self.path(key)
        same_size = target.is_file() and target.stat().st_size == Path(path).stat().st_size
        if same_size and sha256_file(target) == sha256_file(Path(path)):
            return target.as_uri(), False
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        return target.as_uri(), True

    def get_file(self, key: str, path: Path) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise SentiflowError(f"artifact {self.uri(key)} does not exist; rerun the stage that produces it")
        path = Path(path)
        if path.resolve() == source:
            return path
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
        return path

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """The stored file itself (read it, do not change it)."""
        path = self.path(key)
        if not path.is_file():
            raise SentiflowError(f"artifact {self.uri(key)} does not exist; rerun the stage that produces it")
        yield path

    @contextlib.contextmanager
    def publish_dir(self, prefix: str) -> Iterator[Path]:
        """Build the entry in a temporary sibling folder and rename it into place as a whole.

        Leftovers of an earlier writer of the same entry that was killed are removed first (the run lock keeps
        two writers of one entry apart, see ``flows/pipeline.py``)."""
        target = self.path(prefix)
        remove_temporary_siblings(target)
        with atomic_dir(target, replace=False) as tmp:
            yield tmp

    def list(self, prefix: str) -> list[str]:
        """Keys of the files below ``prefix``."""
        base = self.path(prefix)
        if not base.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
