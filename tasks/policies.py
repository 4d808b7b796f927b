"""Retry, timeout, cache and failure-reporting policies shared by every stage task.

- Stage results are persisted and cached on their inputs **and** the task's source (``INPUTS + TASK_SOURCE``):
  ``INPUTS`` alone would let two different tasks with equal inputs share a cache entry. Where the records go
  is decided by the run's default result storage (``sentiflow.ops.storage`` saves it), not by the tasks.
- Network stages retry with jittered exponential backoff; errors that cannot heal (bad data, bad settings —
  any :class:`~core.errors.SentiflowError`) are never retried. Training retries once at most.
- Every stage reports its own final failure on the flow run (labels ``sentiflow.failed-task`` /
  ``sentiflow.failed-error``) so the failure notification can name the task that failed.

Use ``@task(name=..., **STAGE_OPTIONS, **NETWORK_RETRIES, timeout_seconds=...)`` (or ``LOCAL_RETRIES`` /
``TRAINING_RETRIES``). The retry dicts already carry ``on_failure``; do not pass another ``on_failure`` next
to them — extend ``[report_task_failure, ...]`` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.tasks import exponential_backoff

from core.errors import SentiflowError
from core.events import FAILED_ERROR_LABEL, FAILED_TASK_LABEL

STAGE_CACHE_POLICY = INPUTS + TASK_SOURCE

_MAX_ERROR_CHARS = 400

_log = logging.getLogger(__name__)


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient faults, never a SentiflowError."""
    try:
        state.result()
    except SentiflowError:
        return False
    except Exception:
        return True
    return True


def describe_error(state: Any) -> str:
    """``ExceptionType: message`` of a failed state (or its message), shortened for a label."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # reading the result can itself fail (e.g. unpersisted)
        error = exc
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message or "")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def report_task_failure(task: Any, task_run: Any, state: Any) -> None:
    """Task ``on_failure`` hook: label the parent flow run with the failed task's name and error.

    Runs in the flow process when a task fails for good (after its retries), before the flow itself fails, so
    the failure automation (which reads the flow run when it fires) can name the task. Never raises.
    """
    flow_run_id = getattr(task_run, "flow_run_id", None)
    if flow_run_id is None:
        return
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(
                flow_run_id,
                {FAILED_TASK_LABEL: str(task_run.name), FAILED_ERROR_LABEL: describe_error(state)},
            )
    except Exception as exc:  # a reporting problem must never mask the task's own failure
        _log.warning("could not label flow run %s with the failed task: %s", flow_run_id, exc)


STAGE_OPTIONS: dict[str, Any] = {
    "cache_policy": STAGE_CACHE_POLICY,
    "persist_result": True,
}
"""Persist and cache a stage's result so a retried or re-run flow skips it (task-run state ``Cached``)."""

NETWORK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_unless_user_error,
    "on_failure": [report_task_failure],
}

LOCAL_RETRIES: dict[str, Any] = {
    "retries": 1,
    "retry_delay_seconds": 2,
    "retry_condition_fn": retry_unless_user_error,
    "on_failure": [report_task_failure],
}

TRAINING_RETRIES: dict[str, Any] = {
    "retries": 1,
    "retry_delay_seconds": 30,
    "retry_condition_fn": retry_unless_user_error,
    "on_failure": [report_task_failure],
}
"""Training: one retry for a transient fault (spot interruption, lost connection), never an endless loop."""

NO_RETRIES: dict[str, Any] = {
    "retries": 0,
    "on_failure": [report_task_failure],
}
"""Stages whose repetition would do harm (promotion, deletion): fail once, report, let a human decide."""
