"""The quality-gate stage: the promotion decision of ``evaluation.gate`` on accuracy, logged with its reason.

Serving parity is not part of the gate: it is checked after deploy, on the candidate endpoint itself
(``tasks/parity.py``), and decides the promotion there.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from evaluation.gate import gate
from tasks.policies import once_stage


@task(**once_stage("quality-gate"), cache_policy=NO_CACHE)
def gate_task(
    candidate_accuracy: float, deployed_accuracy: float | None, min_accuracy: float, max_regression: float
) -> dict[str, Any]:
    """The promotion decision as ``{"promote": bool, "reason": str}``."""
    from prefect.logging import get_run_logger

    decision = gate(candidate_accuracy, deployed_accuracy, min_accuracy, max_regression)
    get_run_logger().info("quality gate: %s — %s", "promote" if decision.promote else "not promoted", decision.reason)
    return decision.to_dict()
