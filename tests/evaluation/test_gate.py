"""The quality gate's decisions."""

from __future__ import annotations

import pytest

from evaluation.gate import gate


@pytest.mark.parametrize(
    ("candidate", "deployed", "promote", "fragment"),
    [
        (0.86, None, True, "no model deployed"),
        (0.85, None, True, "≥ min_accuracy"),
        (0.849, None, False, "below min_accuracy 0.8500"),
        (0.88, 0.884, True, "within 0.0050"),
        (0.879, 0.885, False, "below the deployed model's 0.8850"),
        (0.90, 0.86, True, "within"),
        (0.84, 0.80, False, "below min_accuracy"),
    ],
)
def test_gate_decisions(candidate: float, deployed: float | None, promote: bool, fragment: str) -> None:
    decision = gate(candidate, deployed, min_accuracy=0.85, max_regression=0.005)
    assert decision.promote is promote
    assert fragment in decision.reason


def test_gate_boundary_of_regression_is_inclusive() -> None:
    assert gate(0.875, 0.88, 0.85, 0.005).promote
