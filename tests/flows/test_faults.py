"""Faults survived, each made to really happen: ``kill -9`` of the flow process while it writes the channels, two
``sentiflow run`` at once on one SENTIFLOW_HOME, and a full disk under the artifact store.

Each runs the ``sentiflow`` command as a user would (a child process) against the session's Prefect server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.io import read_json, sha256_file
from tests.fixtures.synthetic import NLTK_DATA, write_archive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def sentiflow_env(home: Path, api_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SENTIFLOW_"))}
    env.update({"SENTIFLOW_HOME": str(home), "PREFECT_API_URL": api_url, "SENTIFLOW_API_PORT": "0"})
    env.update({f"SENTIFLOW_{name.upper()}": value for name, value in settings.items()})
    if NLTK_DATA.is_dir():
        env["NLTK_DATA"] = str(NLTK_DATA)
    return env


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", *args]
    return subprocess.Popen(  # noqa: S603
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def assert_entries_complete(store: Path) -> None:
    """No leftover of an interrupted write anywhere in the store, and every channel entry matches its manifest."""
    leftovers = [p for p in store.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    for manifest_path in (store / "channels").glob("*/manifest.json"):
        manifest = read_json(manifest_path)
        for relative, digest in manifest["files"].items():
            assert sha256_file(manifest_path.parent / relative) == digest, relative


def stop_local_services(home: Path) -> None:
    from backends.local.api import LocalApiGateway
    from backends.local.endpoints import LocalEndpointManager
    from core.config import Settings

    settings = Settings(home=home)
    endpoints = LocalEndpointManager(settings)
    for endpoint in endpoints.list():
        endpoints.delete(endpoint.name, drain_timeout_s=2)
    LocalApiGateway(settings).stop()


def test_kill_9_while_the_channels_are_written_leaves_no_partial_entry(tmp_path: Path, prefect_api: str) -> None:
    per_class = 2500
    archive = write_archive(tmp_path, per_class=per_class, name="big.tar.gz")
    home = tmp_path / "home"
    # the entry is built in its temporary folder while 10,000 reviews are tokenized: the kill lands mid-entry
    env = sentiflow_env(home, prefect_api, expected_rows_per_split=str(2 * per_class), vocab_size="60", max_len="3000")
    channels = home / "store" / "channels"
    process = start(env, "data", "prepare", "--source", str(archive))
    deadline = time.monotonic() + 600
    partial: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        partial = (
            [p for p in channels.glob(".*.tmp") if any(f.is_file() for f in p.rglob("*"))] if channels.is_dir() else []
        )
        if partial:
            break
        time.sleep(0.005)
    assert partial and process.poll() is None, "the data stage finished before it could be killed mid-write"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not [p for p in channels.iterdir() if not p.name.startswith(".")], "a partial entry was published"

    code, output = finish(start(env, "data", "prepare", "--source", str(archive)))
    assert code == 0, output
    assert "prepare-channels" in output and "train 4,500" in output
    assert_entries_complete(home / "store")
    assert len(list(channels.iterdir())) == 1


def test_two_runs_at_once_take_turns_and_leave_one_consistent_deployment(tmp_path: Path, prefect_api: str) -> None:
    from backends.local.api import LocalApiGateway
    from backends.local.endpoints import LocalEndpointManager
    from backends.local.registry import Registry
    from core.config import Settings

    archive = write_archive(tmp_path, per_class=100)
    home = tmp_path / "home"
    small = {"expected_rows_per_split": "200", "vocab_size": "60", "max_len": "80", "min_accuracy": "0"}
    env = sentiflow_env(home, prefect_api, max_regression="1", parity_sample="20", **small)
    try:
        first = start(env, "run", "--source", str(archive), "--epochs", "1")
        second = start(env, "run", "--source", str(archive), "--epochs", "2")
        (code_1, out_1), (code_2, out_2) = finish(first), finish(second)
        assert code_1 == 0 and code_2 == 0, out_1 + out_2
        assert "waiting for the run lock" in out_1 + out_2  # the second one waited and said for whom

        settings = Settings(home=home)
        live = [e for e in LocalEndpointManager(settings).list() if e.status == "InService"]
        target = LocalApiGateway(settings).target()
        current = Registry.for_settings(settings).current_model()
        assert len(live) == 1, live  # the later promotion replaced the earlier endpoint
        assert target.endpoint_name == live[0].name and current is not None
        assert current.version == live[0].version and current.model_uri == live[0].model_uri
        assert_entries_complete(home / "store")
    finally:
        stop_local_services(home)


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - yields the mount point
    """A 6 MiB tmpfs where the artifact store goes (skipped where this machine cannot mount one)."""
    if os.geteuid() != 0:
        pytest.skip("a full-disk test needs `mount -t tmpfs` (root); not root here")
    store = tmp_path / "home" / "store"
    store.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(store)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def test_a_full_disk_is_a_clear_error_and_keeps_the_earlier_results(
    tmp_path: Path, prefect_api: str, small_disk: Path
) -> None:
    archive = write_archive(tmp_path, per_class=400)
    home = tmp_path / "home"
    env = sentiflow_env(home, prefect_api, expected_rows_per_split="800", vocab_size="60")
    code, output = finish(start(env, "data", "prepare", "--source", str(archive), "--max-len", "80"))
    assert code == 0, output
    before = {p: sha256_file(p) for p in small_disk.rglob("*") if p.is_file()}

    # a dataset 15 times larger (24,000 reviews: archive, Parquet and channels) cannot fit beside the first one
    big = write_archive(tmp_path / "big", per_class=6000, name="big.tar.gz")
    big_env = sentiflow_env(home, prefect_api, expected_rows_per_split="12000", vocab_size="60")
    code, output = finish(start(big_env, "data", "prepare", "--source", str(big), "--max-len", "80"))
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 2, output
    assert len(errors) == 1 and "no space left on the device holding" in errors[0], output
    assert "earlier results are intact" in errors[0] and "Traceback" not in output
    assert_entries_complete(small_disk)  # nothing half-written
    assert {p: sha256_file(p) for p in small_disk.rglob("*") if p.is_file()} == before

    code, output = finish(start(env, "data", "prepare", "--source", str(archive), "--max-len", "80"))
    assert code == 0 and "reused      all 4 stages" in output, output
