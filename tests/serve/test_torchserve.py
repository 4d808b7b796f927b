"""The TorchServe tier: the artifact the project's own training path writes, served by the PyTorch inference
container's toolkit on a real TorchServe (Java) on 127.0.0.1, answers every request the project sends — the Lambda's
``{"review"}``, text/plain, the CLI's ``{"reviews"}``, Batch Transform's CSV mini-batches (one over 5 MB) — and every
client error exactly as the local endpoint (``python -m serve.endpoint``) answers it.

    pytest -m torchserve tests/serve/test_torchserve.py     # needs Java 17 and root (CI: .ci/run)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.serving import EndpointProcess, compare, contract_violations, request_cases
from tests.fixtures.torchserve import TorchServe, torchserve_model, why_torchserve_cannot_run  # noqa: F401

pytestmark = [pytest.mark.torchserve, pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def servers(torchserve_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # noqa: F811
    """TorchServe (two workers READY) and the local endpoint (two workers) on the same unpacked model.tar.gz,
    started side by side; the seconds each took are in ``timings``."""
    reason = why_torchserve_cannot_run()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("tier")
    began = time.monotonic()
    local = EndpointProcess(torchserve_model, "--workers", "2", "--access-log", "off", log=folder / "endpoint.log")
    container = TorchServe(torchserve_model, folder / "torchserve", workers=2)
    try:
        container.start()
        description = container.wait_ready()
        local.wait_ready()
        timings = {"torchserve_ready_s": container.timings["ready_s"], "both_ready_s": time.monotonic() - began}
        yield {"torchserve": container, "local": local, "description": description, "timings": timings}
    finally:
        local.stop()
        container.stop()


@pytest.fixture(scope="module")
def cases(torchserve_model: Path) -> dict[str, tuple[bytes, str | None, str | None]]:  # noqa: F811
    return request_cases(torchserve_model)


def test_ready_means_every_worker_ready(servers: dict) -> None:
    description = servers["description"]
    assert [w["status"] for w in description["workers"]] == ["READY", "READY"]
    status, body = servers["torchserve"].management("/models/model")
    assert status == 200 and json.loads(body)[0]["modelName"] == "model"
    assert servers["torchserve"].port != servers["local"].port


def test_torchserve_answers_every_request_as_the_local_endpoint(servers: dict, cases: dict) -> None:
    container, local = servers["torchserve"], servers["local"]
    served = {name: container.invoke(*request) for name, request in cases.items()}
    assert contract_violations(served) == []
    differences = {name: compare(served[name], local.invoke(*request)) for name, request in cases.items()}
    assert {name: why for name, why in differences.items() if why} == {}
    body, _, _ = cases["transform_csv_over_5mb"]
    assert len(body) > 5 * 1024 * 1024
    assert len(served["transform_csv_over_5mb"][2].splitlines()) == len(body.splitlines())


def test_bodies_are_byte_identical(servers: dict, cases: dict) -> None:
    """Stronger than the 1e-6 comparison: the same code on the same artifact gives the same bytes."""
    container, local = servers["torchserve"], servers["local"]
    names = [name for name in cases if name != "transform_csv_over_5mb"]
    different = [name for name in names if container.invoke(*cases[name]) != local.invoke(*cases[name])]
    assert different == []
