"""The teardown flow on a real (test-harness) Prefect server: dry run, per-endpoint run, report artifacts."""

from __future__ import annotations

import importlib.util
import time

import httpx
import pytest

from backends.base import Backend
from core.config import Settings
from core.events import resource_id
from core.processes import pid_alive
from tasks.deploy import blue_green_deploy
from tests.fixtures.tiny_model import TinyModel

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("prefect_api"),
    pytest.mark.skipif(
        importlib.util.find_spec("backends.local.training") is None,
        reason="the flow calls get_backend, which needs backends/local/training.py (lead)",
    ),
]


def test_flow_dry_run_then_event_style_teardown(settings: Settings, local: Backend, tiny_model: TinyModel) -> None:
    from prefect.client.orchestration import get_client

    from flows.teardown import teardown_idle_endpoints

    promotion = blue_green_deploy(settings, str(tiny_model.model_dir), print, backend=local)
    name, pid = promotion.endpoint.name, promotion.endpoint.extra["pid"]

    dry = teardown_idle_endpoints(idle_minutes=0, dry_run=True)
    assert dry["dry_run"] and [item["name"] for item in dry["items"]] == [name] and dry["deleted"] == []
    assert pid_alive(pid)

    kept = teardown_idle_endpoints(idle_minutes=600)
    assert kept["items"] == [] and pid_alive(pid)

    report = teardown_idle_endpoints(idle_minutes=0, endpoint=resource_id(name))
    assert report["deleted"] == [name] and report["api_cleared"] and report["endpoint_filter"] == name
    assert not pid_alive(pid)
    response = httpx.post(f"{promotion.api.url}/predict", json={"review": "fine"}, timeout=30)
    assert response.status_code == 503

    with get_client(sync_client=True) as client:
        keys = {artifact.key for artifact in client.read_latest_artifacts()}
        assert {"endpoint-teardown", "endpoint-teardown-summary"} <= keys
        events = _wait_for_events(
            client, resource_id(name), {"sentiflow.endpoint.deployed", "sentiflow.endpoint.deleted"}
        )
    deleted = events["sentiflow.endpoint.deleted"]
    assert deleted["payload"]["name"] == name and deleted["payload"]["api_cleared"] is True
    assert events["sentiflow.endpoint.deployed"]["payload"]["version"] == promotion.version


def _wait_for_events(client: object, resource: str, names: set[str], timeout_s: float = 60) -> dict[str, dict]:
    """The latest event of each name for ``resource``, polling the server until all have arrived."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict] = {}
    while time.monotonic() < deadline:
        response = client.request(  # type: ignore[attr-defined]
            "POST",
            "/events/filter",
            json={"filter": {"resource": {"id": [resource]}, "event": {"name": sorted(names)}}, "limit": 50},
        )
        found = {event["event"]: event for event in response.json()["events"]}
        if names <= set(found):
            return found
        time.sleep(0.5)
    raise AssertionError(f"events {sorted(names - set(found))} for {resource} never arrived")
