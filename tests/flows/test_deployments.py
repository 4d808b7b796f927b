"""Acceptance of the real deployments in ``prefect.yaml`` against a real Prefect server and worker.

Fixtures (server, deploy, worker, notification receiver) come from ``tests/fixtures/prefect.py``; the
worker's environment makes a default ``train-and-deploy`` run small (synthetic archive, one epoch). What any
deployment shows (notifications, the UI's Retry mechanics, triggers, approval) is tested once, on fixture flows,
in ``tests/sentiflow/ops/test_operations_e2e.py``; here only what needs the real pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.prefect_helpers import (
    PrefectStack,
    quick_run_from_ui,
    real_deployments_available,
    retry_like_the_ui,
    run_deployment_now,
    task_runs_of,
    wait_for_final_state,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1500),  # a few pipeline runs through the worker, each allowed PIPELINE_TIMEOUT
    pytest.mark.skipif(
        not {"train-and-deploy", "teardown-idle-endpoints"} <= set(real_deployments_available()),
        reason="flows/pipeline.py or flows/teardown.py missing",
    ),
]

TRAIN = "sentiflow-pipeline/train-and-deploy"
TEARDOWN = "sentiflow-teardown/teardown-idle-endpoints"
EVALUATE = "sentiflow-evaluate/evaluate"
PIPELINE_TIMEOUT = 900


def _deployment(name: str):  # noqa: ANN202 - prefect response model
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_real_deployments_register_with_their_schedules(prefect_deployed: list[str]) -> None:
    assert {TRAIN, TEARDOWN} <= set(prefect_deployed)
    train = _deployment(TRAIN)
    assert [s.schedule.cron for s in train.schedules] == ["0 3 * * 1"]
    assert train.global_concurrency_limit is not None and train.global_concurrency_limit.limit == 1
    teardown = _deployment(TEARDOWN)
    assert [s.schedule.interval.total_seconds() for s in teardown.schedules] == [900]
    if "evaluate" in real_deployments_available():
        assert EVALUATE in prefect_deployed
        assert _deployment(EVALUATE).schedules == []


def test_retry_after_a_late_failure_skips_the_stages_that_completed(
    prefect_worker: int, prefect_server: PrefectStack, synthetic_archive: Path
) -> None:
    """The artifact store cannot take the channels (a file stands where their entry goes), so the run fails at
    preprocessing after three stages completed; once the file is gone, a retry from the UI reuses those three —
    in the same flow run, from Prefect's cache, as any worker would."""
    from backends.local.storage import LocalArtifactStore
    from core.config import Settings
    from core.io import sha256_file
    from tasks.data.load import dataset_key
    from tasks.data.prepare import ChannelParameters, channel_key
    from tests.fixtures.prefect import small_pipeline_env

    per_class = 90  # channels no other run of the session has published
    env = small_pipeline_env(synthetic_archive)
    store = LocalArtifactStore(Settings(home=prefect_server.settings.home).store_dir)
    parameters = ChannelParameters(int(env["SENTIFLOW_VOCAB_SIZE"]), int(env["SENTIFLOW_MAX_LEN"]), 0.1, 42, per_class)
    key = channel_key(store.uri(dataset_key(sha256_file(synthetic_archive))), parameters)
    blocker = store.root / "channels" / key
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder: the upload stage cannot write below this path")

    run_id = run_deployment_now(TRAIN, {"max_reviews_per_class": per_class, "teardown_after": True})
    run = wait_for_final_state(run_id, timeout=PIPELINE_TIMEOUT)
    assert run.state.type.value == "FAILED"
    first_attempt = {t.id: t for t in task_runs_of(run_id)}
    completed = {t.name.rsplit("-", 1)[0] for t in first_attempt.values() if t.state.type.value == "COMPLETED"}
    assert completed >= {"download", "load-dataset", "validate-dataset"} and "prepare-channels" not in completed

    blocker.unlink()  # the fix
    retry_like_the_ui(run_id)
    run = wait_for_final_state(run_id, timeout=PIPELINE_TIMEOUT)
    assert run.state.type.value == "COMPLETED", run.state.message
    second = {t.name.rsplit("-", 1)[0]: t.state.name for t in task_runs_of(run_id) if t.id not in first_attempt}
    for stage in ("download", "load-dataset", "validate-dataset"):
        assert second.get(stage) == "Cached", (stage, second)
    assert second.get("prepare-channels") == "Completed", second


def test_ui_run_button_starts_train_and_deploy_to_completion(prefect_worker: int, prefect_server: PrefectStack) -> None:
    deployment = _deployment(TRAIN)
    run_id = quick_run_from_ui(prefect_server.ui_url, deployment.id, deployment.name)
    run = wait_for_final_state(run_id, timeout=PIPELINE_TIMEOUT)
    assert run.state.type.value == "COMPLETED", run.state.message


def test_idle_endpoint_is_deleted_by_teardown_on_its_trigger(prefect_worker: int, prefect_server: PrefectStack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from backends.local.registry import Registry

    registry = Registry.for_settings(prefect_server.settings)
    run_id = run_deployment_now(TRAIN, {"teardown_after": False})
    run = wait_for_final_state(run_id, timeout=PIPELINE_TIMEOUT)
    assert run.state.type.value == "COMPLETED", run.state.message
    deployed = {record.name for record in registry.list_endpoints()}
    assert deployed, "train-and-deploy left no endpoint to tear down"

    # nobody invokes them: within the 15 s idle window plus a worker pickup they must be gone
    def all_deleted() -> bool:
        return not deployed & {record.name for record in registry.list_endpoints()}

    wait_until(all_deleted, timeout=300, what=f"teardown of idle endpoints {sorted(deployed)}", interval=3)
    teardown = _deployment(TEARDOWN)

    def completed_teardowns() -> list:  # noqa: ANN202 - prefect response models
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[teardown.id])))
        return [r for r in runs if r.state is not None and r.state.type.value == "COMPLETED"]

    # the endpoint is gone before its run reports: the run still writes its summary and final state
    completed = wait_until(completed_teardowns, timeout=120, what="a completed teardown-idle-endpoints run", interval=2)
    targeted = {str(r.parameters.get("endpoint") or "").removeprefix("sentiflow.endpoint.") for r in completed}
    assert deployed & targeted or any(not r.parameters.get("endpoint") for r in completed)
