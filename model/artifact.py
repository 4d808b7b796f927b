"""The model artifact: load it, predict with it, add its inference code, pack and unpack ``model.tar.gz``.

A model folder (the unpacked ``model.tar.gz``) holds ``model.pth`` (a state_dict), ``model_info.json``,
``word_dict.json``, ``preprocessing.json``, ``metrics.json`` and ``code/`` (SageMaker's inference entry point
and everything it imports). ``load_artifact`` is the single loader used by evaluation, batch transform, the
local server and ``code/inference.py``. Only the standard library, numpy, torch and ``model.*`` are imported:
this module ships inside the artifact.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from model.network import build_network, returns_logits
from model.preprocessing import Preprocessor

MODEL_FILES = ("model.pth", "model_info.json", "word_dict.json", "preprocessing.json")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Package files copied into code/ (relative to the project root); serve/inference.py is the SageMaker handler.
INFERENCE_SOURCES = (
    "model/__init__.py",
    "model/preprocessing.py",
    "model/stopwords.py",
    "model/network.py",
    "model/artifact.py",
    "serve/__init__.py",
    "serve/inference.py",
)
# What the inference code needs beyond the container's torch and numpy (pinned to the tested versions).
REQUIREMENTS = {"nltk": "3.9", "beautifulsoup4": "4.12"}
INFERENCE_ENTRY = '''"""SageMaker PyTorch inference entry point: re-exports ``serve.inference``'s handlers."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serve.inference import input_fn, model_fn, output_fn, predict_fn  # noqa: E402

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
'''


class ArtifactError(ValueError):
    """A model folder or archive is incomplete, malformed or unsafe."""


@dataclass
class SentimentModel:
    """A loaded model: network (eval mode), its preprocessing, and ``model_info.json``."""

    network: nn.Module
    preprocessor: Preprocessor
    info: dict[str, Any]
    version: str | None = None
    batch_size: int = 256  # most rows in one forward pass
    batch_tokens: int = 4096  # most padded time steps (rows × longest row) in one forward pass
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """P(positive) as float64 for encoded rows ``(n, 1 + max_len)``; batched by length, order kept."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
            raise ArtifactError(f"rows must be a 2-D integer array (n, 1 + max_len), got {rows.dtype} {rows.shape}")
        vocab_size = int(self.info["vocab_size"])
        if len(rows) and (rows[:, 1:].min() < 0 or rows[:, 1:].max() >= vocab_size):
            raise ArtifactError(
                f"rows hold word ids outside [0, {vocab_size}); encode them with this model's vocabulary"
            )
        result = np.empty(len(rows), dtype=np.float64)
        order = np.argsort(rows[:, 0], kind="stable")
        with torch.inference_mode():
            for index in self._length_batches(rows[order, 0], order):
                batch = torch.as_tensor(rows[index], dtype=torch.int64, device=self.device)
                out = self.network(batch).reshape(-1)
                if returns_logits(self.network):
                    out = torch.sigmoid(out)
                result[index] = out.double().cpu().numpy()
        return result

    def _length_batches(self, sorted_lengths: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
        """Split rows sorted by length into batches of at most ``batch_size`` rows and ``batch_tokens`` padded
        steps: the network crops each batch to its longest row, so short reviews travel in large batches and
        long ones in small batches, and hardly any work is spent on padding."""
        batches, start = [], 0
        for end in range(1, len(order) + 1):
            size = end - start
            if (
                end == len(order)
                or size >= self.batch_size
                or (size + 1) * max(1, sorted_lengths[end]) > self.batch_tokens
            ):
                batches.append(order[start:end])
                start = end
        return batches

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        """P(positive) for raw review texts (tokenized with the model's preprocessing)."""
        if not texts:
            return np.empty(0, dtype=np.float64)
        return self.predict_proba(self.preprocessor.encode_texts(texts))


def load_artifact(model_dir: Path | str, device: str | torch.device = "cpu") -> SentimentModel:
    """Load an unpacked model folder; raises ArtifactError naming a missing or broken file."""
    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(
            f"model folder {model_dir} lacks {', '.join(missing)}; point at an unpacked model.tar.gz "
            "written by model/train.py"
        )
    info = json.loads((model_dir / "model_info.json").read_text(encoding="utf-8"))
    try:
        network = build_network(info)
        state = torch.load(model_dir / "model.pth", map_location=device, weights_only=True)
        network.load_state_dict(state)
        preprocessor = Preprocessor.from_dir(model_dir)
    except (ValueError, KeyError, RuntimeError) as error:
        raise ArtifactError(f"cannot load the model in {model_dir}: {error}") from error
    network.to(device).eval()
    return SentimentModel(
        network=network,
        preprocessor=preprocessor,
        info=info,
        version=info.get("version"),
        device=torch.device(device),
    )


# --- inference code --------------------------------------------------------------------------------


def _pinned(package: str, fallback: str) -> str:
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package}>={fallback}"


def requirements_txt() -> str:
    """What the PyTorch containers need beyond torch and numpy, pinned to the versions installed here (the
    inference code's ``code/requirements.txt`` and the training job's source directory both use it)."""
    return "\n".join(_pinned(package, fallback) for package, fallback in REQUIREMENTS.items()) + "\n"


def check_inference_sources(root: Path = PROJECT_ROOT) -> list[Path]:
    """The package files ``code/`` needs; raises ArtifactError naming any that is missing."""
    paths = [root / relative for relative in INFERENCE_SOURCES]
    missing = [str(path.relative_to(root)) for path in paths if not path.is_file()]
    if missing:
        raise ArtifactError(
            f"inference code incomplete under {root}: {', '.join(missing)} not found; "
            "stage the whole source tree (model/ and serve/) with the training script"
        )
    return paths


def write_inference_code(model_dir: Path | str, root: Path = PROJECT_ROOT) -> Path:
    """Create ``model_dir/code/``: the ``inference.py`` entry, the modules it imports, requirements."""
    sources = check_inference_sources(root)
    code_dir = Path(model_dir) / "code"
    if code_dir.exists():
        shutil.rmtree(code_dir)
    for source in sources:
        target = code_dir / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (code_dir / "inference.py").write_text(INFERENCE_ENTRY, encoding="utf-8")
    (code_dir / "requirements.txt").write_text(requirements_txt(), encoding="utf-8")
    return code_dir


# --- model.tar.gz -----------------------------------------------------------------------------------


@contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    """A temp file beside ``target``, renamed onto it on success (the same as ``sentiflow.io.atomic_path``; this
    module ships inside ``model.tar.gz``, where only the standard library, numpy, torch and ``model`` exist)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(payload: Any, target: Path | str) -> Path:
    """``torch.save`` to a temporary sibling, then rename (a crash never leaves half a checkpoint)."""
    with _atomic_target(Path(target)) as tmp:
        torch.save(payload, tmp)
    return Path(target)


def atomic_write_json(target: Path | str, payload: Any) -> Path:
    """JSON to a temporary sibling, then rename."""
    with _atomic_target(Path(target)) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(target)


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack_model_dir(model_dir: Path | str, tar_path: Path | str) -> Path:
    """Pack a model folder into ``model.tar.gz`` with its files at the archive root (byte-reproducible)."""
    model_dir, tar_path = Path(model_dir), Path(tar_path)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"cannot pack {model_dir}: {', '.join(missing)} missing")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    with (
        _atomic_target(tar_path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), filter=_reset)
    return tar_path


def unpack_model(tar_path: Path | str, dest: Path | str) -> Path:
    """Extract ``model.tar.gz`` into ``dest``, refusing links, devices and paths that leave ``dest``."""
    tar_path, dest = Path(tar_path), Path(dest)
    try:
        with tarfile.open(tar_path, mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise ArtifactError(f"unsafe entry {member.name!r} in {tar_path}; refusing to extract it")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArtifactError(f"cannot unpack {tar_path}: {error}; is it a model.tar.gz?") from error
    return dest
