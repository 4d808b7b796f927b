"""The opt-in human approval step on the aws backend: a reviewer's rejection in the Prefect UI's Resume form marks
the model package Rejected in SageMaker Model Registry (moto server, a real Prefect server); an approval leaves it
to the deploy stage."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from prefect import flow

from core.config import Settings
from tests.fixtures.moto_world import MotoWorld

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(300)]


@flow(name="review-model-fixture")
def review_flow(version: int, backend: str) -> bool:
    from flows.approval import review_model

    return review_model(version, "## Evaluation\n\naccuracy 0.91", backend, timeout_s=120)


def paused_run(name: str, timeout_s: float = 90) -> Any:
    """The flow run called ``name`` once it is Paused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
            if runs and runs[0].state is not None and runs[0].state.type.value == "PAUSED":
                return runs[0]
            time.sleep(0.3)
    raise AssertionError(f"flow run {name} did not pause within {timeout_s} s")


def review(settings: Settings, version: int, run_input: dict[str, Any]) -> bool:
    from prefect.flow_runs import resume_flow_run

    name = f"review-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["approved"] = review_flow.with_options(flow_run_name=name)(version, settings.backend)
        except BaseException as error:  # noqa: BLE001 - surfaced below
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    resume_flow_run(paused_run(name).id, run_input=run_input)
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in result, result
    return result["approved"]


def test_a_reviewers_rejection_marks_the_package_rejected(
    aws_settings: Settings, moto_world: MotoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.base import get_registry

    for key, value in moto_world.settings_overrides().items():
        monkeypatch.setenv(f"SENTIFLOW_{key.upper()}", str(value))
    monkeypatch.setenv("SENTIFLOW_HOME", str(aws_settings.home))
    registry = get_registry(aws_settings)
    base = f"s3://{moto_world.bucket}/sentiflow"
    first = registry.register(f"{base}/runs/1/model.tar.gz", accuracy=0.91)
    second = registry.register(f"{base}/runs/2/model.tar.gz", accuracy=0.92)

    rejection = {"approved": False, "reviewer": "dana", "note": "too many errors"}
    assert review(aws_settings, first.version, rejection) is False
    package = moto_world.client("sagemaker").describe_model_package(ModelPackageName=first.ref)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"] == "rejected by dana: too many errors"

    assert review(aws_settings, second.version, {"approved": True, "reviewer": "eve"}) is True
    assert registry.get(second.version).status == "PendingManualApproval"  # the deploy stage approves it
