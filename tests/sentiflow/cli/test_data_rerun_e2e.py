"""A second ``sentiflow data prepare`` with nothing changed answers from the up-to-date check — the same report as
the flow, no flow run — and anything that changes a stage's key (the source, a preprocessing parameter) or takes
away a store entry sends the run through Prefect again. The command runs as a user runs it (a child process)
against the session's Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.synthetic import NLTK_DATA, write_archive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

UP_TO_DATE = "up to date: checked against Prefect's cache records without starting a flow run"
FLOW_RUN = "Flow run '"


def prepare(home: Path, api_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SENTIFLOW_"))}
    env.update({"SENTIFLOW_HOME": str(home), "PREFECT_API_URL": api_url})
    env.update({"SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200", "SENTIFLOW_VOCAB_SIZE": "60", "SENTIFLOW_MAX_LEN": "80"})
    if NLTK_DATA.is_dir():
        env["NLTK_DATA"] = str(NLTK_DATA)
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", "data", "prepare", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)  # noqa: S603
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def report(output: str) -> list[str]:
    """The summary lines (archive, validation, channels and their URIs, reused) without Prefect's log lines."""
    lines = [line for line in output.splitlines() if " | " not in line and not line.startswith("Prefect UI")]
    return [line for line in lines if UP_TO_DATE not in line]


def reused_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("reused "))


def test_an_unchanged_rerun_skips_the_flow_and_any_change_goes_through_prefect(
    tmp_path: Path, prefect_api: str
) -> None:
    archive = write_archive(tmp_path, per_class=100)
    home = tmp_path / "home"
    first = prepare(home, prefect_api, "--source", str(archive))
    assert FLOW_RUN in first and reused_line(first) == "reused      none: all 4 stages ran"

    second = prepare(home, prefect_api, "--source", str(archive))
    assert FLOW_RUN not in second and UP_TO_DATE in second, second
    assert "reused      all 4 stages: nothing changed" in reused_line(second)

    forced = prepare(home, prefect_api, "--source", str(archive), "--full-run")
    assert FLOW_RUN in forced and UP_TO_DATE not in forced
    assert report(forced) == report(second)  # the same report, line for line: stages, counts, store URIs

    changed = prepare(home, prefect_api, "--source", str(archive), "--vocab-size", "61")
    assert FLOW_RUN in changed and UP_TO_DATE not in changed
    assert reused_line(changed).endswith("ran prepare-channels")

    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the source rewritten in place
    touched = prepare(home, prefect_api, "--source", str(archive))
    assert FLOW_RUN in touched and reused_line(touched).endswith("ran download")

    parquet = next((home / "store" / "datasets").glob("*/reviews.parquet"))
    parquet.unlink()  # a store entry deleted by hand
    gone = prepare(home, prefect_api, "--source", str(archive))
    assert FLOW_RUN in gone and "which is gone from the store; running it again" in gone
    assert "load-dataset" in gone and parquet.is_file()

    again = prepare(home, prefect_api, "--source", str(archive))
    assert FLOW_RUN not in again and UP_TO_DATE in again
    assert report(again) == report(second)
