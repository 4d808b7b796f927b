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
    candidate_accuracy: float, deployed_accuracy: float | None, min_accuracy: float, max_regression: float
) -> GateDecision:
    """Promote iff accuracy ≥ ``min_accuracy`` and ≥ ``deployed_accuracy - max_regression`` (when one is
    deployed)."""
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
