"""Cache, retry, timeout and failure-reporting policies shared by every stage task.

**Prefect's cache is the cache.** Each stage takes the narrow inputs that determine its result (a source and its
hash, the vocabulary size, hyperparameters, store URIs, the backend name …), never the whole ``Settings``, and is
cached on ``INPUTS + TASK_SOURCE + CodeFingerprint(<the modules the stage runs>)``: its key changes when an
input or the code that computes the result changes, and only then (changing ``--epochs`` leaves the data stages'
keys alone). ``INPUTS`` alone would let two different tasks with equal inputs share an entry, hence
``TASK_SOURCE``; ``TASK_SOURCE`` covers only the task function, hence the fingerprint of its modules. Where the
records go is decided by the run's default result storage (``sentiflow.ops.storage``), not by the tasks.
The four data stages are keyed on the same ingredients by one Prefect-free function (``tasks.data.keys``), so
the CLI can tell that nothing changed before it imports Prefect (``flows.data.up_to_date``).

Retries: network stages retry with jittered exponential backoff; errors that cannot heal (bad data, bad
settings — any :class:`~core.errors.SentiflowError`) are never retried; training retries once at most.

Timeouts: every stage has one (:data:`TIMEOUTS`); a stage that runs out fails the run with its name and the
limit (``describe_error``, ``flows.pipeline.run_stage``) instead of hanging forever.

Every stage reports its own final failure on the flow run (labels ``sentiflow.failed-task`` /
``sentiflow.failed-error``) so the failure notification can name the task that failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.tasks import exponential_backoff

from core.errors import SentiflowError, TransientError
from core.events import FAILED_ERROR_LABEL, FAILED_TASK_LABEL
from core.fingerprint import code_fingerprint
from core.redact import redact_text

_MAX_ERROR_CHARS = 400

_log = logging.getLogger(__name__)


# --- what a cache key is made of ----------------------------------------------------------------------------


@dataclass
class CodeFingerprint(CachePolicy):
    """Cache-key part: the fingerprint of the modules a stage runs (its own module and what it calls)."""

    modules: tuple[str, ...] = field(default_factory=tuple)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return code_fingerprint(*self.modules)


def stage_cache(*modules: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``@task`` options that persist and cache a stage on its inputs (minus ``exclude``), its source and the
    code of ``modules``, so a rerun with the same inputs and code is served from the cache (state ``Cached``)."""
    inputs = INPUTS
    for name in exclude:
        inputs = inputs - name
    return {"cache_policy": inputs + TASK_SOURCE + CodeFingerprint(modules=tuple(modules)), "persist_result": True}


# --- timeouts -------------------------------------------------------------------------------------------------

TIMEOUTS: dict[str, float] = {
    "download": 3600,
    "load-dataset": 900,
    "validate-dataset": 900,
    "prepare-channels": 1800,
    "train-model": 12 * 3600,  # the flow sets it from the settings (see ``training_timeout_s``)
    "batch-transform": 3600,
    "evaluate": 900,
    "deployed-model": 120,
    "serving-endpoint": 120,
    "register-model": 300,
    "reject-model": 300,
    "quality-gate": 60,
    "deploy-endpoint": 1800,
    "serving-parity": 1800,
    "promote-endpoint": 900,
    "delete-endpoint": 600,
    "find-idle-endpoints": 300,
    "delete-idle-endpoints": 1800,
    "publish-teardown-report": 120,
}
"""Seconds each stage may run before it fails the run (``TimedOut``) with its name and this limit."""

TRAINING_GRACE_S = 1800


def training_timeout_s(max_runtime_s: int) -> float:
    """Training's limit: the job's own stopping condition (``aws_max_runtime_s``) plus time to start and upload."""
    return float(max_runtime_s + TRAINING_GRACE_S)


def timeout_message(name: str, seconds: float | None) -> str:
    """What a timed-out stage says: its name, the limit, and what to look at."""
    limit = f"{seconds:g} s" if seconds else "its time limit"
    return (
        f"stage {name} timed out after {limit} and was stopped: it hung or the machine is too slow for the limit "
        f"(tasks/policies.py TIMEOUTS); see the stage's log lines above for where it stopped"
    )


# --- retries and failure reports --------------------------------------------------------------------------


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient faults (a TransientError included), never another
    SentiflowError (nor a timeout)."""
    if state.name == "TimedOut":
        return False
    try:
        state.result()
    except TransientError:
        return True
    except SentiflowError:
        return False
    except Exception:
        return True
    return True


def describe_error(state: Any, task: Any = None) -> str:
    """``ExceptionType: message`` of a failed state (or its message), URLs redacted, shortened for a label."""
    if state.name == "TimedOut":
        name = getattr(task, "name", None) or "the stage"
        return timeout_message(name, getattr(task, "timeout_seconds", None))[:_MAX_ERROR_CHARS]
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # reading the result can itself fail (e.g. unpersisted)
        error = exc
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message or "")
    text = redact_text(" ".join(text.split()))  # a label is shown and sent: no URL credentials in it
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
                {FAILED_TASK_LABEL: str(task_run.name), FAILED_ERROR_LABEL: describe_error(state, task)},
            )
    except Exception as exc:  # a reporting problem must never mask the task's own failure
        _log.warning("could not label flow run %s with the failed task: %s", flow_run_id, exc)


def _stage(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "timeout_seconds": TIMEOUTS[name], "on_failure": [report_task_failure], **options}


def network_stage(name: str) -> dict[str, Any]:
    """``@task`` options of a stage that talks to the network or a cloud API: 3 retries with backoff."""
    return _stage(
        name,
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_unless_user_error,
    )


def local_stage(name: str) -> dict[str, Any]:
    """``@task`` options of a stage that computes locally: one retry for a transient fault."""
    return _stage(name, retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)


def training_stage(name: str) -> dict[str, Any]:
    """Training: one retry for a transient fault (spot interruption, lost connection), never an endless loop."""
    return _stage(name, retries=1, retry_delay_seconds=30, retry_condition_fn=retry_unless_user_error)


def once_stage(name: str) -> dict[str, Any]:
    """Stages whose repetition would do harm (promotion, deletion): fail once, report, let a human decide."""
    return _stage(name, retries=0)
