"""Build the API Lambda's deployment zip: the handler and the modules it imports, nothing else.

The zip is reproducible (sorted entries, fixed timestamps and permissions), so the same code gives the same
bytes and the same ``CodeSha256``; an unchanged function need not be updated.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from sentiflow.errors import SentiflowError
from sentiflow.io import atomic_path

#: The Lambda ``Handler`` setting for the zip built here.
LAMBDA_HANDLER = "lambda_fn.handler.handler"
#: The Lambda runtime the handler is written for.
LAMBDA_RUNTIME = "python3.11"

PACKAGE_DIR = Path(__file__).resolve().parent
#: Files of ``lambda_fn`` that ship: the handler and its helpers (this build script does not).
_EXCLUDED = {"packaging.py"}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def lambda_sources() -> list[Path]:
    """The ``lambda_fn`` modules that go into the zip, sorted."""
    return sorted(p for p in PACKAGE_DIR.glob("*.py") if p.name not in _EXCLUDED)


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


def code_sha256(zip_path: Path) -> str:
    """The zip's ``CodeSha256`` as AWS Lambda reports it (base64 of the raw sha256 digest)."""
    return base64.b64encode(hashlib.sha256(Path(zip_path).read_bytes()).digest()).decode("ascii")
