"""The model registry lifecycle both registries (local SQLite, SageMaker Model Registry on moto) must follow."""

from __future__ import annotations

from backends.base import APPROVED, PENDING, REJECTED, ModelRegistry


def check_lifecycle(registry: ModelRegistry, uris: tuple[str, str, str], report: str) -> None:
    """register → gate-reject → approve on promotion → a second promotion → rollback to the previous approved."""
    m1, m2, m3 = uris
    assert registry.list() == [] and registry.live() is None and registry.previous_approved() is None

    first = registry.register(m1, metrics_uri=report, tags={"run-id": "run-1", "dataset-sha256": "abc"}, accuracy=0.9)
    assert (first.version, first.model_uri, first.status, first.live) == (1, m1, PENDING, False)
    assert (first.metrics_uri, first.accuracy, first.tags) == (
        report,
        0.9,
        {"run-id": "run-1", "dataset-sha256": "abc"},
    )
    assert registry.register(m1).version == 1  # the same artifact keeps its version
    assert isinstance(registry, ModelRegistry)

    promoted = registry.approve(1, "promoted: the API serves endpoint e1")
    assert (promoted.status, promoted.live, promoted.reason) == (APPROVED, True, "promoted: the API serves endpoint e1")
    assert promoted.promoted_at

    second = registry.register(m2, accuracy=0.7)
    assert (second.version, second.status) == (2, PENDING)
    rejected = registry.reject(2, "quality gate: accuracy 0.7000 < 0.8")
    assert (rejected.status, rejected.live, rejected.reason) == (REJECTED, False, "quality gate: accuracy 0.7000 < 0.8")
    assert registry.live().version == 1

    registry.register(m3, accuracy=0.92)
    third = registry.approve(3)
    assert (third.version, third.status, third.live) == (3, APPROVED, True)
    assert registry.previous_approved().version == 1  # the rejected v2 is skipped

    back = registry.approve(1, "rolled back from v3")
    assert (back.version, back.live) == (1, True)
    assert registry.live().version == 1 and registry.previous_approved() is None
    listed = registry.list()
    assert [(m.version, m.status, m.live) for m in listed] == [
        (1, APPROVED, True),
        (2, REJECTED, False),
        (3, APPROVED, False),
    ]
    assert registry.get(2).reason == "quality gate: accuracy 0.7000 < 0.8" and registry.get(9) is None
