"""sentiflow's Prefect operations against a real server and worker (fixture flows; no torch).

The server's life cycle as a user drives it (``sentiflow prefect server|worker|status|down``, subprocesses with
their own home and port), then the session's server and worker: deployments, notifications, the UI's Retry,
the idle trigger, approval, zombie runs, and the data stage run again and again under the worker. What only the
real ``train-and-deploy`` pipeline shows is in ``tests/flows/test_deployments.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from core import processes
from core.config import Settings
from sentiflow.ops import FAILURE_AUTOMATION, WORK_POOL, ZOMBIE_AUTOMATION
from sentiflow.ops.deploy import deploy_all
from sentiflow.ops.server import read_server
from sentiflow.ops.worker import read_worker
from tests.fixtures.prefect_helpers import (
    FIXTURE_PREFECT_FILE,
    PROJECT_ROOT,
    PrefectStack,
    Receiver,
    free_port,
    retry_like_the_ui,
    run_deployment_now,
    serve_directory,
    task_runs_of,
    wait_for_final_state,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FIXTURE = "fixture-pipeline/fixture"
FIXTURE_TEARDOWN = "fixture-teardown/fixture-teardown"
FIXTURE_DATA = "fixture-data-repeatedly/fixture-data-repeatedly"


def _sentiflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["SENTIFLOW_HOME"] = str(home)
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", "prefect", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, check=False)


def test_server_worker_status_down_lifecycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    port = free_port()
    try:
        started = _sentiflow(home, "server", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert f"Prefect UI:  http://127.0.0.1:{port}" in started.stdout
        # started by Prefect's own command (its pid file), database under SENTIFLOW_HOME, the UI on this port
        assert (home / "prefect" / "server.pid").read_text().strip() == str(read_server(settings).pid)
        ui_settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()
        assert ui_settings["api_url"] == f"http://127.0.0.1:{port}/api"
        assert (home / "prefect" / "prefect.db").is_file()

        again = _sentiflow(home, "server", "--port", str(port))  # idempotent
        assert again.returncode == 0, again.stderr
        assert read_server(settings) is not None

        worker = _sentiflow(home, "worker")
        assert worker.returncode == 0, worker.stderr
        worker_info = read_worker(settings)
        assert worker_info is not None

        status = _sentiflow(home, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout

        server_pid = json.loads((home / "prefect" / "sentiflow-server.json").read_text())["pid"]
        worker_log = home / "prefect" / "worker.log"
        # on a busy machine the worker may still be importing Prefect: let it start (and log) before stopping it
        wait_until(lambda: "Worker" in worker_log.read_text(), timeout=120, what="the worker's first log line")
        down = _sentiflow(home, "down")
        assert down.returncode == 0, down.stderr
        assert not processes.pid_alive(worker_info.pid)
        assert not processes.pid_alive(server_pid)
        assert not (home / "prefect" / "server.pid").exists()
        assert "worker stopped" in down.stdout and "server stopped" in down.stdout
        assert "Worker" in worker_log.read_text()  # it ran and logged
        assert "server: not running" in _sentiflow(home, "status").stdout
    finally:
        _sentiflow(home, "down")


def _deployment(name: str):  # noqa: ANN202 - prefect response model
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_deploy_registers_deployments_with_schedules_pool_and_env(
    prefect_server: PrefectStack, prefect_deployed: list[str]
) -> None:
    assert {FIXTURE, FIXTURE_TEARDOWN} <= set(prefect_deployed)
    pipeline = _deployment(FIXTURE)
    assert pipeline.work_pool_name == WORK_POOL
    assert [s.schedule.cron for s in pipeline.schedules] == ["0 3 * * 1"]
    assert pipeline.global_concurrency_limit is not None and pipeline.global_concurrency_limit.limit == 1
    env = pipeline.job_variables["env"]
    assert env["SENTIFLOW_HOME"] == str(prefect_server.settings.home)
    assert env["SENTIFLOW_PROJECT_DIR"] == str(PROJECT_ROOT)
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    step = pipeline.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == str(PROJECT_ROOT)
    teardown = _deployment(FIXTURE_TEARDOWN)
    assert [s.schedule.interval.total_seconds() for s in teardown.schedules] == [900]


def test_deploy_is_idempotent_and_keeps_one_of_each_automation(
    prefect_server: PrefectStack, prefect_deployed: list[str]
) -> None:
    from prefect.client.orchestration import get_client

    before = _deployment(FIXTURE).id
    deploy_all(prefect_server.settings, project_dir=PROJECT_ROOT, prefect_file=FIXTURE_PREFECT_FILE)
    assert _deployment(FIXTURE).id == before
    with get_client(sync_client=True) as client:
        names = [automation.name for automation in client.read_automations()]
        for name in (FAILURE_AUTOMATION, ZOMBIE_AUTOMATION, "fixture-teardown-idle-endpoint"):
            assert names.count(name) == 1, (name, names)
        result_storage = client.read_server_default_result_storage()
        assert result_storage.default_result_storage_block_id is not None


def test_worker_runs_a_triggered_deployment_to_completion(prefect_worker: int, tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x" * 10)
    with serve_directory(tmp_path) as base:
        run_id = run_deployment_now(FIXTURE, {"source": f"{base}/data.bin", "n": 4})
        run = wait_for_final_state(run_id, timeout=180)
    assert run.state.type.value == "COMPLETED", run.state.message


def test_failed_run_notifies_and_ui_retry_skips_completed_stages(
    prefect_worker: int, notify_receiver: Receiver, tmp_path: Path
) -> None:
    port = free_port()
    n = 5 + uuid.uuid4().int % 1000  # fresh cache keys for this test
    run_id = run_deployment_now(FIXTURE, {"source": f"http://127.0.0.1:{port}/data.bin", "n": n})
    run = wait_for_final_state(run_id, timeout=180)
    assert run.state.type.value == "FAILED"

    def notification() -> dict | None:
        for request in notify_receiver.received():
            if str(run_id) in str(request["json"]):
                return request["json"]
        return None

    message = wait_until(notification, timeout=60, what="the failure notification")
    text = message["text"]
    assert "Flow: fixture-pipeline" in text
    assert "Deployment: fixture" in text
    assert f"Run: {run.name} ({run_id})" in text
    assert "Failed task: fetch-" in text
    assert "Error: ConnectError" in text
    assert f"/runs/flow-run/{run_id}" in text
    assert run.name in message["subject"] and "Failed" in message["subject"]

    first_attempt = {task_run.id: task_run for task_run in task_runs_of(run_id)}
    completed_before = {t.task_key for t in first_attempt.values() if t.state.type.value == "COMPLETED"}
    assert any(t.name.startswith("prepare") for t in first_attempt.values() if t.task_key in completed_before)

    (tmp_path / "data.bin").write_bytes(b"fixed")
    with serve_directory(tmp_path, port=port):  # the fix: the data URL answers now
        retry_like_the_ui(run_id)
        run = wait_for_final_state(run_id, timeout=180)
    assert run.state.type.value == "COMPLETED", run.state.message
    assert run.run_count == 2
    second_attempt = [t for t in task_runs_of(run_id) if t.id not in first_attempt]
    states = {t.task_key: t.state.name for t in second_attempt}
    for key in completed_before:
        assert states[key] == "Cached", states
    fetch = [t for t in second_attempt if t.name.startswith("fetch")]
    assert fetch and fetch[0].state.name == "Completed"


def test_idle_window_trigger_starts_teardown_for_that_endpoint_only(
    prefect_worker: int, prefect_server: PrefectStack
) -> None:
    from prefect.events import emit_event

    from tests.fixtures.prefect_helpers import read_flow_run

    suffix = uuid.uuid4().hex[:8]
    idle, gone = f"sentiflow.endpoint.idle-{suffix}", f"sentiflow.endpoint.gone-{suffix}"
    for resource in (idle, gone):
        emit_event("sentiflow.endpoint.deployed", resource={"prefect.resource.id": resource})
    emit_event("sentiflow.endpoint.deleted", resource={"prefect.resource.id": gone})  # deleted: nothing to check

    def teardown_runs() -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        deployment = _deployment(FIXTURE_TEARDOWN)
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
        return [r for r in runs if r.parameters.get("endpoint") in (idle, gone)]

    runs = wait_until(teardown_runs, timeout=120, what="the idle-teardown trigger to start a run", interval=2)
    run = wait_for_final_state(runs[0].id, timeout=120)
    assert run.state.type.value == "COMPLETED"
    assert read_flow_run(run.id).parameters["endpoint"] == idle
    assert [r.parameters["endpoint"] for r in teardown_runs()] == [idle]


def test_approval_gate_pauses_until_a_reviewer_decides(prefect_worker: int) -> None:
    from prefect.flow_runs import resume_flow_run

    from tests.fixtures.prefect_helpers import read_flow_run

    approve = run_deployment_now("fixture-approval/fixture-approval")
    reject = run_deployment_now("fixture-approval/fixture-approval")
    for run_id in (approve, reject):
        wait_until(
            lambda run_id=run_id: read_flow_run(run_id).state.type.value == "PAUSED",
            timeout=180,
            what="the run to pause for approval",
        )
        keyset = read_flow_run(run_id).state.state_details.run_input_keyset
        assert keyset is not None  # the UI renders its form from this schema
    resume_flow_run(approve, run_input={"approved": True, "reviewer": "alice", "note": "looks good"})
    resume_flow_run(reject, run_input={"approved": False, "reviewer": "bob"})
    assert wait_for_final_state(approve, timeout=120).state.type.value == "COMPLETED"
    rejected = wait_for_final_state(reject, timeout=120)
    assert rejected.state.type.value == "FAILED"
    assert "rejected" in (rejected.state.message or "")


def test_running_flow_run_without_heartbeats_is_marked_crashed_and_notified(
    prefect_deployed: list[str], notify_receiver: Receiver
) -> None:
    """A run whose machine died stays Running and stops heartbeating (simulated: one heartbeat event)."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.states import Running

    from tests.fixtures.prefect_helpers import read_flow_run

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FIXTURE)
        run = client.create_flow_run_from_deployment(deployment.id, state=Running(), parameters={"n": 1})
    emit_event(
        "prefect.flow-run.heartbeat",
        resource={"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name},
    )
    crashed = wait_until(
        lambda: (state := read_flow_run(run.id).state) is not None and state.type.value == "CRASHED",
        timeout=240,
        what="the zombie automation to mark the run Crashed",
        interval=3,
    )
    assert crashed
    assert "No heartbeat" in (read_flow_run(run.id).state.message or "")

    def notification() -> dict | None:
        return next((r["json"] for r in notify_receiver.received() if str(run.id) in str(r["json"])), None)

    text = wait_until(notification, timeout=60, what="the crash notification")["text"]
    assert "State: Crashed" in text and "Failed task: unknown" in text


def test_the_data_stage_runs_again_and_again_under_the_worker(prefect_worker: int, tmp_path: Path) -> None:
    """Preprocessing in a worker-run flow (Prefect's threads all around it), several times in one run: each run of
    the stage has a time limit, so a hang fails the run naming the stage instead of hanging here."""
    from core.io import sha256_file
    from tests.fixtures.synthetic import write_archive

    archive = write_archive(tmp_path, per_class=600, name="many.tar.gz")  # enough rows for a pool, if there were one
    run_id = run_deployment_now(FIXTURE_DATA, {"source": str(archive), "sha256": sha256_file(archive), "times": 4})
    run = wait_for_final_state(run_id, timeout=900)
    assert run.state.type.value == "COMPLETED", run.state.message
    prepared = [t for t in task_runs_of(run_id) if t.name.startswith("prepare-channels")]
    assert len(prepared) == 4 and all(t.state.name == "Completed" for t in prepared)
