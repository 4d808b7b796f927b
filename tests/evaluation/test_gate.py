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


def test_the_behaviour_pass_rate_rule() -> None:
    """0 (the default) only reports; a minimum blocks a model below it, and one that reported no rate."""
    assert gate(0.9, None, 0.85, 0.005).reason.endswith("no model deployed yet")  # no suite result, no minimum
    reported = gate(0.9, None, 0.85, 0.005, behaviour_pass_rate=0.4)
    assert reported.promote and "behavioural pass rate 0.4000 ≥ 0.0000" in reported.reason
    blocked = gate(0.95, None, 0.85, 0.005, behaviour_pass_rate=0.79, min_behaviour_pass_rate=0.8)
    assert (
        not blocked.promote and blocked.reason == "behavioural pass rate 0.7900 is below min_behaviour_pass_rate 0.8000"
    )
    assert gate(0.95, None, 0.85, 0.005, behaviour_pass_rate=0.8, min_behaviour_pass_rate=0.8).promote
    missing = gate(0.95, None, 0.85, 0.005, min_behaviour_pass_rate=0.8)
    assert not missing.promote and "no behavioural pass rate was reported" in missing.reason
    assert not gate(0.80, None, 0.85, 0.005, behaviour_pass_rate=1.0).promote  # accuracy still decides
