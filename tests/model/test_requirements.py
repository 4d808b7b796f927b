"""The artifact's ``code/requirements.txt``: pinned with hashes, and vendored wheels that install with no network.

The SageMaker PyTorch containers run ``python -m pip install -r requirements.txt`` (inference: in
``/opt/ml/model/code``; training: in the unpacked source bundle). Here the same pip command runs against a fresh
venv with every index and pip configuration switched off, so only the vendored wheels can satisfy it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.artifact import (
    PACKAGE_DIR,
    REQUIREMENTS_LOCK,
    ArtifactError,
    pinned_wheels,
    requirement_pins,
    requirements_txt,
    write_inference_code,
)

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "requirements" / "model-wheels"
UV = Path(sys.executable).parent / "uv"


def offline_pip_install(requirements: Path, cwd: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    """``pip install -r requirements`` from ``cwd`` into a fresh venv, with no index, no pip.conf and no PIP_*
    variables (an index URL nothing listens on, in case the file itself forgot ``--no-index``)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_CACHE_DIR="1")
    command = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--disable-pip-version-check",
    ]
    return subprocess.run(
        [*command, "-r", str(requirements)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_every_pin_carries_its_wheels_hash() -> None:
    text = requirements_txt()
    pins = requirement_pins()
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        f"{name}=={version} --hash=sha256:{digest}" for name, version, digest in pins
    ]
    assert "--no-index" not in text
    vendored = requirements_txt(wheels="wheels").splitlines()
    assert vendored[1:3] == ["--no-index", "--find-links wheels"]


def test_a_missing_or_hand_edited_lock_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"requirements.lock.txt cannot be read .*make lock"):
        requirement_pins(tmp_path)
    (tmp_path / REQUIREMENTS_LOCK).write_text("beautifulsoup4>=4.12\n")
    with pytest.raises(ArtifactError, match=r"'beautifulsoup4>=4.12' is not name==version --hash"):
        requirements_txt(package_dir=tmp_path)


def test_a_wheel_that_differs_from_its_hash_is_refused_at_build_time(tmp_path: Path) -> None:
    shutil.copytree(WHEELS, tmp_path / "wheels")
    victim = sorted((tmp_path / "wheels").glob("soupsieve-*.whl"))[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match=rf"{victim.name} has sha256 [0-9a-f]{{64}}, the lock says"):
        pinned_wheels(tmp_path / "wheels")
    victim.unlink()
    with pytest.raises(ArtifactError, match=r"no wheel of soupsieve==\S+ in .*make lock"):
        pinned_wheels(tmp_path / "wheels")


def test_vendored_code_installs_into_a_fresh_venv_with_no_network(tmp_path: Path) -> None:
    """The inference container's step: code/requirements.txt, run from another folder, offline; then bs4 imports.
    A tampered hash in the same file makes pip refuse."""
    code = write_inference_code(tmp_path / "model", wheels=WHEELS)
    assert sorted(path.name for path in (code / "wheels").iterdir()) == sorted(path.name for path in WHEELS.iterdir())
    venv = tmp_path / "venv"
    done = offline_pip_install(code / "requirements.txt", cwd=tmp_path, venv=venv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed beautifulsoup4-" in done.stdout
    script = "import bs4, soupsieve; print(bs4.__version__, bs4.BeautifulSoup('<p>a<br/>b</p>', 'html.parser').text)"
    check = subprocess.run([venv / "bin" / "python", "-c", script], capture_output=True, text=True, timeout=60)
    bs4_version = next(version for name, version, _ in requirement_pins(PACKAGE_DIR) if name == "beautifulsoup4")
    assert check.stdout.split() == [bs4_version, "ab"], check.stderr

    digest = requirement_pins()[0][2]
    tampered = (code / "requirements.txt").read_text().replace(digest, "0" * 64)
    (code / "requirements.txt").write_text(tampered)
    refused = offline_pip_install(code / "requirements.txt", cwd=tmp_path, venv=tmp_path / "venv2")
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr


def test_unvendored_code_cannot_install_offline(tmp_path: Path) -> None:
    """Without the wheels, the same offline install fails: the vendored test above does not pass by accident."""
    code = write_inference_code(tmp_path / "model")
    done = offline_pip_install(code / "requirements.txt", cwd=code, venv=tmp_path / "venv")
    assert done.returncode != 0 and "beautifulsoup4" in done.stderr, done.stdout + done.stderr
