"""Turn what a user passes as ``--model`` into an unpacked model folder.

Accepted: a model folder (holding ``model.pth``), a ``model.tar.gz`` path, a ``file://`` URI of either,
or a URI of the configured artifact store (``s3://…`` with the aws backend). Archives are unpacked once into
``<home>/cache/models/<sha256 prefix>/`` and reused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from sentiflow.config import Settings
from sentiflow.errors import SentiflowError
from sentiflow.io import atomic_dir, sha256_file

MODEL_WEIGHTS = "model.pth"


def path_from_file_uri(uri: str) -> Path:
    """``file:///a/b`` → ``/a/b``."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path))


def unpacked_model_dir(tar_path: Path, cache_dir: Path) -> Path:
    """The folder ``tar_path`` unpacks to (unpacked now unless already cached)."""
    from model.artifact import unpack_model

    target = cache_dir / "models" / sha256_file(tar_path)[:16]
    if not (target / MODEL_WEIGHTS).is_file():
        with atomic_dir(target) as tmp:
            unpack_model(tar_path, tmp)
    return target


def resolve_model_dir(artifact: str, settings: Settings) -> Path:
    """An unpacked model folder for ``artifact`` (folder, ``.tar.gz``, ``file://`` or store URI)."""
    scheme = urlparse(artifact).scheme if "://" in artifact else ""
    if scheme == "file":
        path = path_from_file_uri(artifact)
    elif scheme:
        with tempfile.TemporaryDirectory(prefix="model-", dir=_ensure(settings.cache_dir)) as tmp:
            return unpacked_model_dir(_download(artifact, settings, Path(tmp)), settings.cache_dir)
    else:
        path = Path(artifact).expanduser()
    if path.is_dir():
        if not (path / MODEL_WEIGHTS).is_file():
            raise SentiflowError(
                f"model folder {path} holds no {MODEL_WEIGHTS}; pass a trained model folder or its model.tar.gz"
            )
        return path
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise SentiflowError(f"model {path} is neither a folder nor a .tar.gz; pass a model.tar.gz")
        return unpacked_model_dir(path, settings.cache_dir)
    raise SentiflowError(f"model {artifact} does not exist; pass a model folder, model.tar.gz or store URI")


def _download(uri: str, settings: Settings, folder: Path) -> Path:
    from backends.base import get_store

    store = get_store(settings)
    try:
        key = store.key_from_uri(uri)
    except (ValueError, SentiflowError) as error:
        raise SentiflowError(
            f"model URI {uri} is not in the {settings.backend} artifact store ({error}); "
            "set SENTIFLOW_BACKEND / the bucket, or pass a local path"
        ) from None
    if not store.exists(key):
        raise SentiflowError(f"model URI {uri} does not exist in the artifact store; check the URI")
    return store.get_file(key, folder / Path(key).name)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
