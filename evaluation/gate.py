"""The quality gate: promote a candidate only if it is good enough and not worse than what is deployed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

_EPSILON = 1e-12  # 0.85 must pass a 0.85 bar despite float rounding


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def gate(
    candidate_accuracy: float,
    deployed_accuracy: float | None,
    min_accuracy: float,
    max_regression: float,
    behaviour_pass_rate: float | None = None,
    min_behaviour_pass_rate: float = 0.0,
) -> GateDecision:
    """Promote iff accuracy ≥ ``min_accuracy`` and ≥ ``deployed_accuracy - max_regression`` (when one is
    deployed), and the behavioural suite's pass rate ≥ ``min_behaviour_pass_rate``
    (``SENTIFLOW_MIN_BEHAVIOUR_PASS_RATE``; 0, the default, only reports it)."""
    behaviour = behaviour_rule(behaviour_pass_rate, min_behaviour_pass_rate)
    if behaviour is not None and not behaviour.promote:
        return behaviour
    decision = _accuracy_gate(candidate_accuracy, deployed_accuracy, min_accuracy, max_regression)
    if behaviour is not None and decision.promote:
        return GateDecision(True, f"{decision.reason}; {behaviour.reason}")
    return decision


def behaviour_rule(pass_rate: float | None, minimum: float) -> GateDecision | None:
    """The pass-rate rule alone: None when there is nothing to decide (no suite result and no minimum)."""
    if pass_rate is None:
        if minimum > 0:
            return GateDecision(
                False, f"no behavioural pass rate was reported but min_behaviour_pass_rate is {minimum:.4f}"
            )
        return None
    if pass_rate + _EPSILON < minimum:
        return GateDecision(
            False, f"behavioural pass rate {pass_rate:.4f} is below min_behaviour_pass_rate {minimum:.4f}"
        )
    return GateDecision(True, f"behavioural pass rate {pass_rate:.4f} ≥ {minimum:.4f}")


def _accuracy_gate(
    candidate_accuracy: float, deployed_accuracy: float | None, min_accuracy: float, max_regression: float
) -> GateDecision:
    if candidate_accuracy + _EPSILON < min_accuracy:
        return GateDecision(False, f"accuracy {candidate_accuracy:.4f} is below min_accuracy {min_accuracy:.4f}")
    if deployed_accuracy is not None and candidate_accuracy + _EPSILON < deployed_accuracy - max_regression:
        return GateDecision(
            False,
            f"accuracy {candidate_accuracy:.4f} is {deployed_accuracy - candidate_accuracy:.4f} below the "
            "deployed "
            f"model's {deployed_accuracy:.4f} (max_regression {max_regression:.4f})",
        )
    if deployed_accuracy is None:
        return GateDecision(
            True,
            f"accuracy {candidate_accuracy:.4f} ≥ min_accuracy {min_accuracy:.4f}; no model deployed yet",
        )
    return GateDecision(
        True,
        f"accuracy {candidate_accuracy:.4f} ≥ min_accuracy {min_accuracy:.4f} and within "
        f"{max_regression:.4f} "
        f"of the deployed model's {deployed_accuracy:.4f}",
    )
