"""Regenerate every lock file (``make lock``): the project's, uv's bootstrap pin, the build constraints, the model's.

1. ``requirements/project.lock.txt``: ``uv pip compile`` of pyproject.toml's dependencies plus the ``dev`` extra,
   every file's sha256, for CPython 3.11.7 on linux x86_64; torch is overridden to the CPU build on this machine's
   disk (``requirements/torch-cpu.txt``, ``--find-links /opt/wheels``). uv keeps the versions already in the lock
   unless pyproject.toml asks otherwise (``--upgrade`` to move everything: ``make lock ARGS=--upgrade``).
2. ``requirements/uv.txt``: uv's own entry from that lock; ``make venv`` pip-installs it ``--require-hashes``.
   ``requirements/build-constraints.txt``: the lock's setuptools entry, the one build requirement of the five
   sdist-only packages (legacy ``setup.py``, no ``setup_requires``); ``make venv`` passes it as uv's
   ``--build-constraints``, so their isolated builds run a hash-checked setuptools.
3. ``model/requirements.lock.txt``: what ``model/`` imports beyond the SageMaker PyTorch container
   (``requirements/model.in``) with all its dependencies, at the project lock's versions, each with the sha256 of
   the one py3 wheel ``requirements/model-wheels/`` holds (downloaded here, checked against the project lock's
   hashes). ``model/artifact.py`` writes ``code/requirements.txt`` from it and vendors those wheels on request.

Needs the network (PyPI) and the venv's uv. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
PROJECT_LOCK = REQ / "project.lock.txt"
UV_PIN = REQ / "uv.txt"
BUILD_CONSTRAINTS = REQ / "build-constraints.txt"
BUILD_REQUIREMENTS = ("setuptools",)  # PEP 517's fallback backend for a setup.py without pyproject.toml
TORCH_OVERRIDE = REQ / "torch-cpu.txt"
MODEL_IN = REQ / "model.in"
MODEL_WHEELS = REQ / "model-wheels"
MODEL_LOCK = ROOT / "model" / "requirements.lock.txt"
PYTHON_VERSION = "3.11.7"  # the oldest 3.11 the lock is for: uv's 3.11 would mean 3.11.0 and pick other versions
TIMEOUT_S = 600
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", re.M)


def parse_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """``{normalized name: (version, {sha256, …})}`` of a uv/pip-compile lock with hashes."""
    pins: dict[str, tuple[str, set[str]]] = {}
    for match in _ENTRY.finditer(text):
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        pins[name] = (match[2], set(re.findall(r"sha256:([0-9a-f]{64})", match[3])))
    return pins


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(command), flush=True)
    try:
        return subprocess.run(command, check=True, text=True, timeout=TIMEOUT_S, **kwargs)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as error:
        sys.exit(f"lock: {' '.join(command[:4])} failed (exit {error.returncode}); see its output above")
    except subprocess.TimeoutExpired:
        sys.exit(f"lock: {' '.join(command[:3])} took over {TIMEOUT_S} s; check the network and retry")


def _uv() -> str:
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        sys.exit(f"lock: {uv} not found; run `make venv` first (it installs uv from {UV_PIN.relative_to(ROOT)})")
    return str(uv)


def lock_project(extra: list[str]) -> dict[str, tuple[str, set[str]]]:
    """Re-compile the project lock (keeping its versions as preferences) and return its pins."""
    _run(
        [
            _uv(), "pip", "compile", "pyproject.toml", "--extra", "dev", "--generate-hashes",
            "--python-version", PYTHON_VERSION, "--find-links", "/opt/wheels", "--emit-find-links",
            "--override", str(TORCH_OVERRIDE.relative_to(ROOT)), "--custom-compile-command", "make lock",
            "--quiet", "-o", str(PROJECT_LOCK.relative_to(ROOT)), *extra,
        ],
        cwd=ROOT,
    )  # fmt: skip
    return parse_lock(PROJECT_LOCK.read_text(encoding="utf-8"))


def _pin_lines(name: str, pins: dict[str, tuple[str, set[str]]]) -> list[str]:
    """``name==version \\`` and its ``--hash`` lines, as in the lock."""
    version, hashes = pins[name]
    lines = [f"{name}=={version} \\", *(f"    --hash=sha256:{digest} \\" for digest in sorted(hashes))]
    lines[-1] = lines[-1].removesuffix(" \\")
    return lines


def write_uv_pin(pins: dict[str, tuple[str, set[str]]]) -> None:
    """uv's own pin with the lock's hashes, for ``pip install --require-hashes`` before uv exists."""
    lines = [
        "# uv, hash-pinned: `make venv` pip-installs it with --require-hashes, then installs project.lock.txt with it.",
        "# Written by `make lock` (scripts/lock.py) from uv's entry in project.lock.txt; do not edit.",
        *_pin_lines("uv", pins),
    ]
    _write(UV_PIN, "\n".join(lines) + "\n")


def write_build_constraints(pins: dict[str, tuple[str, set[str]]]) -> None:
    """The build requirements of the lock's sdist-only packages, with the lock's hashes (uv checks them)."""
    lines = [
        "# Build requirements of the lock's sdist-only packages (the SageMaker toolkits, inotify-simple: setup.py,",
        "# no setup_requires), hash-pinned; `make venv` passes this file to uv as --build-constraints.",
        "# Written by `make lock` (scripts/lock.py) from project.lock.txt; do not edit.",
    ]
    for name in BUILD_REQUIREMENTS:
        lines += _pin_lines(name, pins)
    _write(BUILD_CONSTRAINTS, "\n".join(lines) + "\n")


def lock_model(pins: dict[str, tuple[str, set[str]]]) -> None:
    """Resolve requirements/model.in at the project lock's versions, fetch the wheels, write the model lock."""
    with tempfile.TemporaryDirectory(prefix="sentiflow-lock-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, (version, _) in sorted(pins.items())))
        resolved = _run(
            [
                _uv(), "pip", "compile", str(MODEL_IN), "--constraint", str(constraints), "--python-version",
                PYTHON_VERSION, "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--no-annotate",
            ],
            cwd=ROOT, stdout=subprocess.PIPE,
        ).stdout  # fmt: skip
        wanted = [line.strip() for line in resolved.splitlines() if "==" in line]
        download = Path(tmp) / "wheels"
        _run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--platform", "manylinux_2_28_x86_64", "--python-version", PYTHON_VERSION, "--implementation", "cp",
                "--abi", "cp311", "--dest", str(download), *wanted,
            ]
        )  # fmt: skip
        entries: list[str] = []
        for wheel in sorted(download.glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            key = re.sub(r"[-_.]+", "-", name).lower()
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if key not in pins or pins[key][0] != version or digest not in pins[key][1]:
                sys.exit(f"lock: {wheel.name} (sha256 {digest}) is not in {PROJECT_LOCK.name}; re-run `make lock`")
            entries.append(f"{key}=={version} --hash=sha256:{digest}")
        if len(entries) != len(wanted):
            sys.exit(f"lock: pip downloaded {len(entries)} wheels for {len(wanted)} pins ({', '.join(wanted)})")
        MODEL_WHEELS.mkdir(exist_ok=True)
        for stale in MODEL_WHEELS.glob("*.whl"):
            if not (download / stale.name).exists():
                stale.unlink()
        for wheel in download.glob("*.whl"):
            shutil.copyfile(wheel, MODEL_WHEELS / f".{wheel.name}.tmp")
            os.replace(MODEL_WHEELS / f".{wheel.name}.tmp", MODEL_WHEELS / wheel.name)
    header = [
        "# What model/ imports beyond the SageMaker PyTorch container (requirements/model.in), every dependency",
        "# pinned at the project lock's version, each with the sha256 of its one wheel (requirements/model-wheels/).",
        "# model/artifact.py writes code/requirements.txt from this file. Written by `make lock`; do not edit.",
    ]
    _write(MODEL_LOCK, "\n".join(header + entries) + "\n")


def main(argv: list[str]) -> None:
    """``scripts/lock.py [extra uv pip compile options]``: rewrite the four lock files."""
    pins = lock_project(argv)
    if "uv" not in pins or "torch" not in pins:
        sys.exit(f"lock: {PROJECT_LOCK.name} lacks uv or torch; pyproject.toml must list both")
    write_uv_pin(pins)
    write_build_constraints(pins)
    lock_model(pins)
    print(f"lock: {len(pins)} pins in {PROJECT_LOCK.relative_to(ROOT)}; model: {MODEL_LOCK.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
