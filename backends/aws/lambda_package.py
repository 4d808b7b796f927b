"""Build the API Lambda's deployment zip: the ``lambda_fn`` package (exactly what the zip ships), nothing else.

The zip is reproducible (sorted entries, fixed timestamps and permissions), so the same code gives the same
bytes and the same ``CodeSha256``; an unchanged function need not be updated.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import lambda_fn
from core.errors import SentiflowError
from core.io import atomic_path

#: The Lambda ``Handler`` setting for the zip built here.
LAMBDA_HANDLER = "lambda_fn.handler.handler"
#: The Lambda runtime the handler is written for.
LAMBDA_RUNTIME = "python3.11"

PACKAGE_DIR = Path(lambda_fn.__file__).resolve().parent
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def lambda_sources() -> list[Path]:
    """The ``lambda_fn`` modules that go into the zip, sorted."""
    return sorted(PACKAGE_DIR.glob("*.py"))


def build_lambda_zip(dest: Path) -> Path:
    """Write the zip to ``dest`` (a ``.zip`` path, or a folder to hold ``lambda.zip``); return its path."""
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / "lambda.zip"
    sources = lambda_sources()
    if not any(p.name == "handler.py" for p in sources):
        raise SentiflowError(f"lambda_fn/handler.py is missing from {PACKAGE_DIR}; reinstall sentiflow")
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sources:
            info = zipfile.ZipInfo(f"lambda_fn/{path.name}", date_time=_FIXED_TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return dest
