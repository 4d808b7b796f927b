"""The one event vocabulary: resource ids, and an emitter that stays silent without a Prefect API."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import core.events
from core.events import (
    DEPLOYED_EVENT,
    emit_endpoint_event,
    endpoint_from_resource,
    endpoint_resource_id,
    resource_id,
)


def test_resource_ids_round_trip() -> None:
    name = "sentiflow-v7-abc123"
    assert resource_id(name) == f"sentiflow.endpoint.{name}"
    assert endpoint_from_resource(resource_id(name)) == name == endpoint_from_resource(name)
    assert endpoint_resource_id("ep") == endpoint_resource_id("sentiflow.endpoint.ep") == "sentiflow.endpoint.ep"


def test_endpoints_emit_nothing_when_invoked() -> None:
    """Idle detection asks the endpoint (/stats, CloudWatch); no invocation event exists any more."""
    assert not hasattr(core.events, "InvocationEvents") and not hasattr(core.events, "INVOKED_EVENT")


@dataclass
class _Endpoint:
    name: str = "ep"
    model_uri: str = "file:///m.tar.gz"
    version: int = 1
    url: str | None = None
    instance_type: str | None = None
    created_at: str | None = None


def test_endpoint_events_outside_a_run_and_without_an_api_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    emitted: list[object] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kwargs: emitted.append(kwargs))
    emit_endpoint_event(DEPLOYED_EVENT, _Endpoint(), "local")
    assert emitted == []
