"""The quality-gate stage: the promotion decision of ``evaluation.gate``, blocked outright by a failed parity
check, logged with its reason."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from evaluation.gate import gate
from tasks.policies import NO_RETRIES


@task(name="quality-gate", **NO_RETRIES)
def gate_task(
    candidate_accuracy: float,
    deployed_accuracy: float | None,
    min_accuracy: float,
    max_regression: float,
    parity_passed: bool = True,
) -> dict[str, Any]:
    """The promotion decision as ``{"promote": bool, "reason": str}`` (parity failure always blocks)."""
    logger = get_run_logger()
    decision = gate(candidate_accuracy, deployed_accuracy, min_accuracy, max_regression)
    if not parity_passed:
        decision = type(decision)(False, "serving parity check failed: the endpoint would not match batch evaluation")
    logger.info("quality gate: %s — %s", "promote" if decision.promote else "not promoted", decision.reason)
    return decision.to_dict()
