"""Nothing executable in shared storage: Prefect's result records are JSON, never pickle.

A unit test shows every kind of stage result survives Prefect's JSON serializer unchanged; an e2e test runs a
stage in a child process set up as sentiflow's entry points set it up (``configure_environment``) against the
session's Prefect server and reads the record it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from backends.base import ApiInfo, EndpointInfo, TeardownDecision, TrainingResult
from tasks.data.download import ArchiveRef
from tasks.data.load import DatasetRef
from tasks.data.prepare import ChannelSet
from tasks.deploy import Deletion, Promotion
from tasks.teardown import TeardownItem, TeardownReport
from tests.fixtures.prefect_helpers import PROJECT_ROOT

_ENDPOINT = EndpointInfo("sentiflow-a", "s3://b/m.tar.gz", 3, "InService", extra={"k": [1, 2]})
STAGE_RESULTS: list[Any] = [
    ArchiveRef("file:///s/a.tar.gz", "https://h/a.tar.gz", "ab" * 32, 10, 0.5),
    DatasetRef("file:///s/d.parquet", "ab" * 32, 100),
    ChannelSet("k", {"train": "file:///t"}, "file:///m.json", {"train": 3}, 60, 1.5),
    TrainingResult("job", "s3://b/m.tar.gz", {"accuracy": 0.9, "history": [{"epoch": 1}]}, {"epochs": 2}, 3.0),
    Promotion(_ENDPOINT, 3, ApiInfo("https://x", None, "sentiflow-a"), replaced=("sentiflow-old",)),
    Deletion("sentiflow-a", True, _ENDPOINT, ["note"]),
    [TeardownDecision(_ENDPOINT, "idle", 61.0, 2.5, "1 process")],
    TeardownReport("local", False, 60, None, items=[TeardownItem("sentiflow-a", 3, "u", "idle", 61.0, 2.5, "", True)]),
    {"report_uri": "file:///r.json", "passed": True, "failures": []},
    "s3://b/transform/out",
]


@pytest.mark.parametrize("result", STAGE_RESULTS, ids=lambda r: type(r).__name__)
def test_every_kind_of_stage_result_round_trips_through_json(result: Any) -> None:
    from prefect.serializers import JSONSerializer

    serializer = JSONSerializer()
    data = serializer.dumps(result)
    json.loads(data)  # plain JSON text
    assert serializer.loads(data) == result


def test_sentiflow_processes_serialize_results_as_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.config import Settings
    from sentiflow.ops.runtime import configure_environment

    monkeypatch.delenv("PREFECT_RESULTS_DEFAULT_SERIALIZER", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for name in ("SENTIFLOW_HOME", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK",
                 "PREFECT_SERVER_EPHEMERAL_ENABLED", "GX_ANALYTICS_ENABLED"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)  # what configure_environment sets is undone after the test
    configure_environment(Settings(home=tmp_path / "home"))
    assert os.environ["PREFECT_RESULTS_DEFAULT_SERIALIZER"] == "json"


_CHILD = """
import sys
from pathlib import Path
from core.config import Settings
from sentiflow.ops.runtime import configure_environment
configure_environment(Settings(home=Path(sys.argv[1])))
from prefect import flow
from prefect.filesystems import LocalFileSystem
from tasks.data.download import download_task

storage = LocalFileSystem(basepath=sys.argv[3])
storage.save(sys.argv[4], overwrite=True)

@flow(result_storage=storage)  # here, whatever the server's default result storage is
def fetch(source: str) -> str:
    return download_task.with_options(result_storage=storage)(source, None, "local").sha256

print(fetch(sys.argv[2]))
"""


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_stage_result_record_holds_no_pickle(prefect_api: str, synthetic_archive: Path, tmp_path: Path) -> None:
    storage = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_RESULTS")}
    env["PREFECT_API_URL"] = prefect_api
    command = [
        sys.executable,
        "-c",
        _CHILD,
        str(tmp_path / "home"),
        str(synthetic_archive),
        str(storage),
        f"json-{uuid.uuid4().hex[:12]}",
    ]
    done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [path for path in storage.rglob("*") if path.is_file()]
    assert records, f"no result record under {storage}"
    results = []
    for path in records:  # the stage's record, and the flow's return value (stored bare)
        text = path.read_text()
        record = json.loads(text)
        assert "pickle" not in text
        if isinstance(record, dict) and "metadata" in record:
            assert record["metadata"]["serializer"]["type"] == "json", record["metadata"]
            results.append(json.loads(record["result"]))
    assert any(isinstance(r, dict) and r.get("__class__") == "tasks.data.download.ArchiveRef" for r in results)
