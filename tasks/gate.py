"""The quality-gate stage: the model is registered in the backend's model registry (PendingManualApproval), then
``evaluation.gate`` decides on accuracy against the registry's live model, logged with its reason; a model the
gate (or a reviewer, ``flows.approval``) turns down is marked Rejected there.

Serving parity is not part of the gate: it is checked after deploy, on the candidate endpoint itself
(``tasks/parity.py``), and decides the promotion there.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from evaluation.gate import gate
from tasks.policies import network_stage, once_stage


def _settings(backend: str) -> Any:
    from core.config import get_settings

    return get_settings("parameter", backend=backend)


def _log(line: str) -> None:
    from prefect.logging import get_run_logger

    get_run_logger().info("%s", line)


@task(**network_stage("register-model"), cache_policy=NO_CACHE)
def register_model_task(
    model_uri: str, metrics_uri: str | None, accuracy: float | None, tags: dict[str, str], backend: str
) -> dict[str, Any]:
    """Register the evaluated model (idempotent: the same artifact keeps its version); the registry entry."""
    from backends.base import get_registry

    model = get_registry(_settings(backend)).register(model_uri, metrics_uri=metrics_uri, tags=tags, accuracy=accuracy)
    _log(f"model v{model.version} registered ({model.status}): {model_uri}" + (f" [{model.ref}]" if model.ref else ""))
    return model.to_dict()


@task(**network_stage("reject-model"), cache_policy=NO_CACHE)
def reject_model_task(version: int, reason: str, backend: str) -> bool:
    """Mark model ``version`` Rejected (unless it is the live model); whether it was."""
    from tasks.deploy import reject_unless_live

    return reject_unless_live(_settings(backend), version, reason, _log)


@task(**once_stage("quality-gate"), cache_policy=NO_CACHE)
def gate_task(
    candidate_accuracy: float,
    deployed_accuracy: float | None,
    min_accuracy: float,
    max_regression: float,
    behaviour_pass_rate: float | None = None,
    min_behaviour_pass_rate: float = 0.0,
) -> dict[str, Any]:
    """The promotion decision as ``{"promote": bool, "reason": str}``."""
    from prefect.logging import get_run_logger

    decision = gate(
        candidate_accuracy,
        deployed_accuracy,
        min_accuracy,
        max_regression,
        behaviour_pass_rate=behaviour_pass_rate,
        min_behaviour_pass_rate=min_behaviour_pass_rate,
    )
    get_run_logger().info("quality gate: %s — %s", "promote" if decision.promote else "not promoted", decision.reason)
    return decision.to_dict()
