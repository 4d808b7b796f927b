"""Stage policies: what a cache key is made of, and every stage's time limit."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from prefect import Task

import tasks
from core.fingerprint import module_files
from tasks.policies import TIMEOUTS, CodeFingerprint, code_fingerprint, timeout_message


def all_stage_tasks() -> list[Task]:
    found = []
    for module in pkgutil.walk_packages(tasks.__path__, "tasks."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, Task) and value.__module__ == module.name:
                found.append(value)
    return found


def test_every_stage_has_a_time_limit_and_reports_its_failure() -> None:
    stages = all_stage_tasks()
    assert len(stages) >= 15
    for stage in stages:
        assert stage.timeout_seconds and stage.timeout_seconds == TIMEOUTS[stage.name], stage.name
        assert stage.on_failure_hooks, stage.name


def test_no_stage_takes_the_whole_settings() -> None:
    import inspect

    for stage in all_stage_tasks():
        assert "settings" not in inspect.signature(stage.fn).parameters, stage.name


def test_a_package_fingerprint_covers_every_module_in_it(tmp_path: Path) -> None:
    files = {path.name for path in module_files("model")}
    assert {"preprocessing.py", "network.py", "inference.py", "train.py"} <= files
    assert [path.name for path in module_files("tasks.data.prepare")] == ["prepare.py"]
    assert code_fingerprint("model") != code_fingerprint("model.preprocessing")
    assert CodeFingerprint(modules=("model",)).compute_key(None, {}, {}) == code_fingerprint("model")


def test_the_data_stages_keys_ignore_what_training_reads() -> None:
    """Changing --epochs cannot reach a data stage's key: no data stage takes it, nor the settings."""
    import inspect

    from tasks.data.download import download_task
    from tasks.data.load import load_task
    from tasks.data.prepare import prepare_task
    from tasks.data.validate import validate_task

    for stage in (download_task, load_task, validate_task, prepare_task):
        assert not {"epochs", "hyperparameters", "settings"} & set(inspect.signature(stage.fn).parameters)


def test_a_timeout_names_the_stage_and_the_limit() -> None:
    message = timeout_message("prepare-channels", 1800)
    assert message.startswith("stage prepare-channels timed out after 1800 s")


@pytest.mark.e2e
# pytest-timeout's signal method would hold SIGALRM, and Prefect then times a stage out from a watcher thread, which
# cannot interrupt a blocking call; a flow run (CLI or worker) has no such handler and gets Prefect's alarm.
@pytest.mark.timeout(300, method="thread")
def test_a_stage_that_hangs_fails_the_run_with_its_name(prefect_api: str) -> None:
    import time

    from prefect import flow, task

    from core.errors import SentiflowError
    from flows.pipeline import run_stage
    from tasks.policies import once_stage

    TIMEOUTS.setdefault("hangs", 2)

    @task(**once_stage("hangs"))
    def hangs() -> None:
        time.sleep(120)

    @flow(name="timeout-e2e")
    def timeout_flow() -> None:
        run_stage(hangs, reused={})

    started = time.monotonic()
    with pytest.raises(SentiflowError, match=r"^stage hangs timed out after 2 s and was stopped"):
        timeout_flow()
    assert time.monotonic() - started < 60  # stopped at the limit, not waited for (the sleep is 120 s)


def test_a_transient_error_is_retried_and_another_user_error_is_not() -> None:
    from prefect.states import Completed, Failed

    from core.errors import ConfigError, TransientError
    from tasks.policies import retry_unless_user_error

    def failed(error: Exception) -> object:
        return Failed(data=error)

    assert retry_unless_user_error(None, None, failed(TransientError("the network is away"))) is True
    assert retry_unless_user_error(None, None, failed(ConnectionError("reset"))) is True
    assert retry_unless_user_error(None, None, failed(ConfigError("bad setting"))) is False
    assert retry_unless_user_error(None, None, Completed()) is True
