"""Turn a model reference (what a user passes as ``--model``, or a stage's model URI) into an unpacked model folder.

Accepted: a model folder (holding ``model.pth``), a ``model.tar.gz`` path, a ``file://`` URI of either,
or a URI of the configured artifact store (``s3://…`` with the aws backend). Archives are unpacked once into
``<home>/cache/models/<sha256 prefix>/`` and reused. An archive is checked against
``core.archives.MODEL_LIMITS`` (members, sizes, expansion ratio, no links or paths outside) before it is unpacked:
a model archive is written by whoever can write the store (the SageMaker execution role), so it is untrusted.

It lives with the backends because a store URI needs the artifact store; the serving code is handed the folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from backends.base import get_store
from core.archives import MODEL_LIMITS, ArchiveRefused, check_tar
from core.config import Settings
from core.errors import SentiflowError
from core.io import atomic_dir, local_path, sha256_file

MODEL_WEIGHTS = "model.pth"


def unpacked_model_dir(tar_path: Path, cache_dir: Path) -> Path:
    """The folder ``tar_path`` unpacks to (unpacked now unless already cached)."""
    from model.artifact import unpack_model  # torch is imported on first use, not with this module

    target = cache_dir / "models" / sha256_file(tar_path)[:16]
    if not (target / MODEL_WEIGHTS).is_file():
        try:
            check_tar(tar_path, MODEL_LIMITS)
        except ArchiveRefused as error:
            raise SentiflowError(f"model archive refused: {error}; pass a model.tar.gz that training wrote") from None
        with atomic_dir(target) as tmp:
            unpack_model(tar_path, tmp)
    return target


def resolve_model_dir(artifact: str, settings: Settings) -> Path:
    """An unpacked model folder for ``artifact`` (folder, ``.tar.gz``, ``file://`` or store URI)."""
    path = local_path(artifact) if "://" in artifact else Path(artifact).expanduser()
    if path is None:
        with tempfile.TemporaryDirectory(prefix="model-", dir=_ensure(settings.cache_dir)) as tmp:
            return unpacked_model_dir(_download(artifact, settings, Path(tmp)), settings.cache_dir)
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
