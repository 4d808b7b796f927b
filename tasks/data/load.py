"""Stage 2 — read the aclImdb layout into one table: ``split, label, id, rating, review``.

The archive is streamed member by member straight into memory, so nothing from it is ever written to disk:
path traversal and links cannot escape anywhere. Members that would be unsafe to extract (absolute paths, ``..``,
links, devices) are refused with a clear error, as is any review file that does not follow the
``{train,test}/{pos,neg}/ID_RATING.txt`` naming. ``load_task`` (the Prefect stage) reads the archive from the
artifact store and puts the table there beside it: ``datasets/<archive sha256>/reviews.parquet``.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from prefect import task

from core.errors import DataError
from tasks.data.keys import LOAD, data_stage_cache
from tasks.policies import local_stage

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["split", "label", "id", "rating", "review"]
_REVIEW_PATH = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/([^/]+)$")
_REVIEW_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_LABELS = {"pos": 1, "neg": 0}


def _unsafe(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return "its path leaves the extraction folder"
    if member.issym() or member.islnk():
        return f"it is a link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "it is a device, FIFO or other special file"
    return None


def _row(relative: str, text: bytes) -> dict:
    match = _REVIEW_PATH.search(relative)
    assert match is not None
    split, polarity, name = match.groups()
    parsed = _REVIEW_NAME.match(name)
    if parsed is None:
        raise DataError(
            f"badly named review file {relative!r}: expected ID_RATING.txt (e.g. 123_8.txt) under "
            "{train,test}/{pos,neg}/; is this the aclImdb dataset?"
        )
    try:
        review = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"review file {relative!r} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return {
        "split": split,
        "label": _LABELS[polarity],
        "id": int(parsed.group(1)),
        "rating": int(parsed.group(2)),
        "review": review,
    }


def _frame(rows: list[dict], origin: str) -> pd.DataFrame:
    import pandas as pd

    if not rows:
        raise DataError(f"{origin} holds no aclImdb review files ({{train,test}}/{{pos,neg}}/ID_RATING.txt)")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.sort_values(["split", "label", "id"], kind="stable", ignore_index=True)
    return frame.astype({"label": "int8", "id": "int32", "rating": "int8"})


def load_archive(archive: Path) -> pd.DataFrame:
    """Every review of an aclImdb ``.tar.gz`` as one table (sorted by split, label, id)."""
    rows: list[dict] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                problem = _unsafe(member)
                if problem:
                    raise DataError(f"archive {archive} contains unsafe member {member.name!r}: {problem}")
                if member.isfile() and member.name.endswith(".txt") and _REVIEW_PATH.search(member.name):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    rows.append(_row(member.name, handle.read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"archive {archive} is truncated or corrupt ({type(error).__name__}: {error}); delete it and download again"
        ) from None
    return _frame(rows, f"archive {archive}")


def load_aclimdb_dir(directory: Path) -> pd.DataFrame:
    """Every review of an extracted ``aclImdb`` folder (the folder itself or its parent)."""
    directory = Path(directory)
    base = directory if directory.name == "aclImdb" else directory / "aclImdb"
    if not base.is_dir():
        raise DataError(f"{directory} is not an aclImdb folder: expected {base} with train/ and test/ inside")
    rows = []
    for path in sorted(base.glob("*/*/*.txt")):
        relative = "aclImdb/" + path.relative_to(base).as_posix()
        if _REVIEW_PATH.search(relative):
            rows.append(_row(relative, path.read_bytes()))
    return _frame(rows, f"folder {base}")


# --- the Prefect task ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRef:
    """The review table in the artifact store; ``sha256`` is the archive's (the table's identity)."""

    uri: str
    sha256: str
    rows: int

    def artifacts(self) -> list[str]:
        return [self.uri]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_key(archive_sha256: str) -> str:
    return f"datasets/{archive_sha256}/reviews.parquet"


def read_dataset(store: Any, uri: str) -> pd.DataFrame:
    """The review table at store ``uri``."""
    import pandas as pd

    with store.local_file(store.key_from_uri(uri)) as path:
        return pd.read_parquet(path)


@task(**local_stage(LOAD), **data_stage_cache(LOAD))
def load_task(archive_uri: str, archive_sha256: str, backend: str) -> DatasetRef:
    """Read the aclImdb layout from the stored archive into ``reviews.parquet`` in the store."""
    from prefect.logging import get_run_logger

    from backends.base import get_store
    from core.config import get_settings

    store = get_store(get_settings("parameter", backend=backend))
    with store.local_file(store.key_from_uri(archive_uri)) as archive:
        frame = load_archive(archive)
    with tempfile.TemporaryDirectory(prefix="sentiflow-load-") as scratch:
        frame.to_parquet(Path(scratch) / "reviews.parquet", index=False)
        uri, _ = store.put_file(Path(scratch) / "reviews.parquet", dataset_key(archive_sha256))
    get_run_logger().info("load: %d reviews → %s", len(frame), uri)
    return DatasetRef(uri, archive_sha256, len(frame))
