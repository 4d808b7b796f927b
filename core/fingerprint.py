"""The fingerprint of a set of modules' source code: part of every stage's cache key.

Nothing here imports the modules it fingerprints (only the parent packages ``importlib.util.find_spec`` needs),
and nothing imports Prefect, so a cache key can be computed before Prefect is loaded (``tasks.data.keys``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from core.errors import SentiflowError


def module_files(name: str) -> list[Path]:
    """The source files of module ``name``; every ``.py`` file below it for a package."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SentiflowError(f"module {name!r} named in a cache policy does not exist")
    if spec.submodule_search_locations:
        roots = [Path(location) for location in spec.submodule_search_locations]
        return sorted(path for root in roots for path in root.rglob("*.py") if "__pycache__" not in path.parts)
    return [Path(spec.origin)]


@lru_cache(maxsize=64)
def code_fingerprint(*modules: str) -> str:
    """sha256 over the sources of ``modules`` (names and contents)."""
    digest = hashlib.sha256()
    for name in modules:
        for path in module_files(name):
            digest.update(f"{name}:{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
