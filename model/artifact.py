"""The model artifact: load it, predict with it, add its inference code, pack and unpack ``model.tar.gz``.

A model folder (the unpacked ``model.tar.gz``) holds ``model.pth`` (a state_dict), ``model_info.json``,
``word_dict.json``, ``preprocessing.json``, ``metrics.json`` and ``code/``: SageMaker's inference entry point
``code/inference.py`` (three lines re-exporting ``model.inference``'s handlers), ``code/model/`` (a copy of this
whole package, which is self-contained), ``code/requirements.txt`` (every pin with its wheel's sha256, from
``model/requirements.lock.txt``) and, when vendored, ``code/wheels/`` (those wheels: the container installs them
with ``--no-index``, so an endpoint starts without the network). ``load_artifact`` is the single loader
used by evaluation, batch transform, the local server and ``code/inference.py``. Only the standard library,
numpy, torch and ``model.*`` are imported: this module ships inside the artifact.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from model.network import build_network, returns_logits
from model.preprocessing import Preprocessor

MODEL_FILES = ("model.pth", "model_info.json", "word_dict.json", "preprocessing.json")
PACKAGE_DIR = Path(__file__).resolve().parent
# The modules code/inference.py needs (code/model/ carries every module of this package).
INFERENCE_MODULES = ("__init__.py", "artifact.py", "inference.py", "network.py", "preprocessing.py", "stopwords.py")
# What model/ needs beyond the SageMaker PyTorch containers (torch, numpy, pandas, …): every pin with the sha256 of
# its one wheel, written by `make lock` (scripts/lock.py) from requirements/model.in. It ships in code/model/.
REQUIREMENTS_LOCK = "requirements.lock.txt"
# A model package carrying this folder (the training source bundle's model/wheels/) is vendored: the inference code
# it writes gets the wheels too, and both requirements files install from them with --no-index.
WHEELS = "wheels"
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) --hash=sha256:([0-9a-f]{64})")
# The container imports code/inference.py with code/ on sys.path, so ``model`` is importable as is.
INFERENCE_ENTRY = '''"""SageMaker PyTorch inference entry point: re-exports ``model.inference``'s four handlers."""
from model.inference import input_fn, model_fn, output_fn, predict_fn
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
    # most padded time steps (rows × longest costed row) in one forward pass: 64 rows of nb-lstm's 256 LSTM steps
    # (a one-thread LSTM costs 194 µs a row in batches of 16, 182 µs in batches of 64 — benchmarks/serve.py)
    batch_tokens: int = 16384
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
        return self.predict_batches(rows[:, 0], lambda index: rows[index])

    def predict_batches(self, lengths: np.ndarray, take: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """P(positive) as float64 for ``len(lengths)`` encoded rows that ``take(index)`` builds one batch at a time
        (rows ``index`` as an ``(len(index), 1 + max_len)`` integer array, ids already checked). All rows are
        sorted by length together, then cut by :meth:`_length_batches`; the answer keeps the request order. A
        caller holding thousands of rows (a Batch Transform mini-batch) thus never builds one large matrix.
        Each batch is cut to its longest row (every network's output ignores the padding)."""
        lengths = np.clip(np.asarray(lengths), 0, None)
        result = np.empty(len(lengths), dtype=np.float64)
        order = np.argsort(lengths, kind="stable")
        window = getattr(self.network, "cost_window", None)
        cost = lengths if window is None else np.minimum(lengths, window)
        with torch.inference_mode():
            for index in self._length_batches(cost[order], order):
                rows = take(index)
                longest = min(int(lengths[index].max(initial=0)), rows.shape[1] - 1)
                batch = torch.as_tensor(rows[:, : max(longest, 1) + 1], dtype=torch.int64, device=self.device)
                out = self.network(batch).reshape(-1)
                if returns_logits(self.network):
                    out = torch.sigmoid(out)
                result[index] = out.double().cpu().numpy()
        return result

    def _length_batches(self, sorted_lengths: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
        """Split rows sorted by length into batches of at most ``batch_size`` rows and ``batch_tokens`` padded
        steps: each batch is cut to its longest row, so short reviews travel in large batches and long ones in
        small batches, and hardly any work is spent on padding. ``sorted_lengths`` are the costed lengths: a
        network with a ``cost_window`` (nb-lstm: its LSTM reads the first ``lstm_len`` tokens, the n-gram path is
        cheap) counts at most that many steps per row."""
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


def requirement_pins(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, str, str]]:
    """``(name, version, sha256)`` of every line of ``model/requirements.lock.txt``; ArtifactError naming the file
    if it is missing or a line is not ``name==version --hash=sha256:<64 hex>``."""
    path = Path(package_dir) / REQUIREMENTS_LOCK
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as error:
        raise ArtifactError(
            f"{path} cannot be read ({error.strerror}); stage the whole model/ package, or run `make lock`"
        ) from None
    pins: list[tuple[str, str, str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        match = _PIN.fullmatch(line)
        if match is None:
            raise ArtifactError(f"{path}: {line!r} is not name==version --hash=sha256:…; regenerate it: `make lock`")
        pins.append((match[1], match[2], match[3]))
    if not pins:
        raise ArtifactError(f"{path} pins nothing; regenerate it with `make lock`")
    return pins


def requirements_txt(wheels: str | None = None, package_dir: Path = PACKAGE_DIR) -> str:
    """``requirements.txt`` for the PyTorch containers (the inference code's and the training source bundle's):
    every pin of ``model/requirements.lock.txt`` with its wheel's hash, so pip installs in hash-checking mode and
    refuses any other file. ``wheels`` (a folder relative to the requirements file, where pip resolves it) adds
    ``--no-index --find-links <wheels>``: pip then installs from the vendored wheels only, with no network."""
    lines = ["# Every dependency pinned with its wheel's sha256 (model/requirements.lock.txt): pip checks each file."]
    if wheels:
        lines += ["--no-index", f"--find-links {wheels}"]
    lines += [f"{name}=={version} --hash=sha256:{digest}" for name, version, digest in requirement_pins(package_dir)]
    return "\n".join(lines) + "\n"


def pinned_wheels(source: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The wheel in ``source`` of every pin, each checked against the pin's sha256; ArtifactError naming the wheel
    (and ``make lock``) if one is missing or differs."""
    source = Path(source)
    found = {_normalized(path.name.split("-")[0]): path for path in source.glob("*.whl")}
    wheels = []
    for name, version, digest in requirement_pins(package_dir):
        wheel = found.get(_normalized(name))
        if wheel is None or wheel.name.split("-")[1] != version:
            raise ArtifactError(f"no wheel of {name}=={version} in {source}; run `make lock` to fetch the wheels")
        with wheel.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != digest:
            raise ArtifactError(
                f"{wheel} has sha256 {actual}, the lock says {digest}; restore it (git checkout) or run `make lock`"
            )
        wheels.append(wheel)
    return wheels


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def code_sources(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every module of the ``model`` package and its requirements lock, sorted: what ``code/model/`` and the
    training source bundle carry."""
    package_dir = Path(package_dir)
    lock = [package_dir / REQUIREMENTS_LOCK] if (package_dir / REQUIREMENTS_LOCK).is_file() else []
    return sorted([*package_dir.glob("*.py"), *lock])


def check_inference_sources(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package's modules; raises ArtifactError naming any module ``code/inference.py`` needs that is missing."""
    sources = code_sources(package_dir)
    missing = sorted(set(INFERENCE_MODULES) - {path.name for path in sources})
    if missing:
        raise ArtifactError(
            f"inference code incomplete under {package_dir}: {', '.join(f'model/{name}' for name in missing)} "
            "not found; stage the whole model/ package with the training script"
        )
    return sources


def write_inference_code(model_dir: Path | str, package_dir: Path = PACKAGE_DIR, wheels: Path | None = None) -> Path:
    """Create ``model_dir/code/``: the ``inference.py`` entry, a copy of the ``model`` package, requirements.

    ``wheels`` (a folder holding the pinned wheels) vendors them into ``code/wheels/``; by default they are vendored
    when ``package_dir`` carries ``wheels/`` (a vendored training source bundle does)."""
    sources = check_inference_sources(package_dir)
    if wheels is None and (Path(package_dir) / WHEELS).is_dir():
        wheels = Path(package_dir) / WHEELS
    code_dir = Path(model_dir) / "code"
    if code_dir.exists():
        shutil.rmtree(code_dir)
    (code_dir / "model").mkdir(parents=True)
    for source in sources:
        shutil.copyfile(source, code_dir / "model" / source.name)
    if wheels is not None:
        vendor_wheels(code_dir, wheels, package_dir)
    else:
        (code_dir / "requirements.txt").write_text(requirements_txt(package_dir=package_dir), encoding="utf-8")
    (code_dir / "inference.py").write_text(INFERENCE_ENTRY, encoding="utf-8")
    return code_dir


def vendor_wheels(code_dir: Path, wheels: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Copy the pinned wheels (hash-checked) from ``wheels`` into ``code_dir/wheels/`` and write a requirements.txt
    that installs only from them (``--no-index``); returns ``code_dir``."""
    target = Path(code_dir) / WHEELS
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for wheel in pinned_wheels(wheels, package_dir):
        shutil.copyfile(wheel, target / wheel.name)
    requirements = requirements_txt(wheels=WHEELS, package_dir=package_dir)
    (Path(code_dir) / "requirements.txt").write_text(requirements, encoding="utf-8")
    return Path(code_dir)


# --- model.tar.gz -----------------------------------------------------------------------------------


@contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    """A temp file beside ``target``, renamed onto it on success (the same as ``core.io.atomic_path``; this
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


def write_reproducible_tar(tar_path: Path | str, files: Iterable[tuple[str, Path | bytes]]) -> Path:
    """Write a ``.tar.gz`` of ``(name, file or bytes)`` atomically and byte-reproducibly: entries in name order,
    owner root, mode 0644, mtime 0 in the tar and in the gzip header (same content, same bytes)."""
    tar_path = Path(tar_path)
    with (
        _atomic_target(tar_path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, content in sorted(files, key=lambda item: item[0]):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = 0o644, 0
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.size = Path(content).stat().st_size
                with open(content, "rb") as handle:
                    tar.addfile(info, handle)
    return tar_path


def pack_model_dir(model_dir: Path | str, tar_path: Path | str) -> Path:
    """Pack a model folder into ``model.tar.gz`` with its files at the archive root (byte-reproducible)."""
    model_dir, tar_path = Path(model_dir), Path(tar_path)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"cannot pack {model_dir}: {', '.join(missing)} missing")
    files = [
        (path.relative_to(model_dir).as_posix(), path)
        for path in model_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    return write_reproducible_tar(tar_path, files)


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
