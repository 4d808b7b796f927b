"""The blue/green deployment stage against real endpoint processes and the real local API gateway."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from backends.base import Backend, get_registry
from backends.local.registry import Registry
from core.config import Settings
from core.errors import SentiflowError
from core.processes import pid_alive
from tasks.deploy import blue_green_deploy, delete_endpoint, endpoint_name_for, rollback
from tests.fixtures.tiny_model import TinyModel


@pytest.fixture
def models(tiny_model: TinyModel, local: Backend) -> tuple[str, str]:
    """Two model artifacts in the store (distinct URIs, so two versions)."""
    first, _ = local.store.put_file(tiny_model.tar_path, "jobs/first/model.tar.gz")
    second, _ = local.store.put_file(tiny_model.tar_path, "jobs/second/model.tar.gz")
    return first, second


def predict(api_url: str, review: str = "a wonderful, brilliant film") -> tuple[int, dict]:
    response = httpx.post(f"{api_url}/predict", json={"review": review}, timeout=30)
    return response.status_code, response.json()


@dataclass
class Traffic:
    """Keeps sending requests through the API from a thread; records every answer."""

    api_url: str
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.api_url}/predict", json={"review": "a wonderful film"})
                    self.answers.append((response.status_code, response.json().get("model_version")))
                except (httpx.HTTPError, ValueError) as error:
                    self.errors.append(repr(error))
                self.stop.wait(0.01)

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    @property
    def failed(self) -> list:
        return self.errors + [answer for answer in self.answers if answer[0] != 200]


def test_endpoint_names_carry_the_version() -> None:
    name = endpoint_name_for(7)
    assert re.fullmatch(r"sentiflow-v7-[0-9a-f]{6}", name) and name != endpoint_name_for(7)


@pytest.mark.e2e
def test_failed_deploys_leave_the_old_endpoint_serving(
    settings: Settings, local: Backend, models: tuple[str, str], tmp_path: Path
) -> None:
    lines: list[str] = []
    first = blue_green_deploy(settings, models[0], lines.append, backend=local)
    assert first.version == 1 and first.api is not None and first.replaced == ()
    status, body = predict(first.api.url)
    assert status == 200 and body["model_version"] == "1"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pth").write_bytes(b"not a model")  # passes the folder check, then the server cannot load it
    with pytest.raises(SentiflowError, match="exited while starting"):
        blue_green_deploy(settings, str(broken), lines.append, backend=local)
    with pytest.raises(SentiflowError, match="failed the parity check"):
        blue_green_deploy(settings, models[1], lines.append, backend=local, parity_check=lambda e: False)

    assert [e.name for e in local.endpoints.list()] == [first.endpoint.name]
    assert local.api.current().endpoint_name == first.endpoint.name
    status, body = predict(first.api.url)
    assert status == 200 and body["model_version"] == "1"
    assert Registry.for_settings(settings).current_model().version == 1
    statuses = {m.version: (m.status, m.live) for m in get_registry(settings).list()}
    assert statuses[1] == ("Approved", True)
    assert statuses[max(statuses)] == ("Rejected", False)  # the candidate that failed parity


@pytest.mark.e2e
@pytest.mark.serial
def test_blue_green_under_load_then_rollback(settings: Settings, local: Backend, models: tuple[str, str]) -> None:
    lines: list[str] = []
    blue = blue_green_deploy(settings, models[0], lines.append, backend=local)
    blue_pid, blue_url = blue.endpoint.extra["pid"], blue.endpoint.url
    api_url = blue.api.url

    with Traffic(api_url) as traffic:
        green = blue_green_deploy(settings, models[1], lines.append, backend=local)
        seen = len(traffic.answers)
        traffic.stop.wait(0.5)
        while len(traffic.answers) < seen + 5 and not traffic.errors:
            traffic.stop.wait(0.05)

    assert traffic.failed == []
    versions = [version for _, version in traffic.answers]
    assert "1" in versions and versions[-1] == "2"
    assert green.version == 2 and green.replaced == (blue.endpoint.name,) and green.api.url == api_url
    assert not pid_alive(blue_pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{blue_url}/ping", timeout=2)
    assert [e.name for e in local.endpoints.list()] == [green.endpoint.name]
    assert Registry.for_settings(settings).current_model().version == 2

    with Traffic(api_url) as traffic:
        back = rollback(settings, lines.append, backend=local)
        seen = len(traffic.answers)
        while len(traffic.answers) < seen + 5 and not traffic.errors:
            traffic.stop.wait(0.05)

    assert traffic.failed == []
    assert back.version == 1 and back.rolled_back_from == 2 and back.replaced == (green.endpoint.name,)
    assert back.endpoint.name.startswith("sentiflow-v1-") and back.endpoint.name != blue.endpoint.name
    assert traffic.answers[-1] == (200, "1")
    assert Registry.for_settings(settings).current_model().version == 1
    with pytest.raises(SentiflowError, match="v1 is the oldest promoted, approved version"):
        rollback(settings, lines.append, backend=local)


@pytest.mark.e2e
def test_deleting_the_served_endpoint_clears_the_api(
    settings: Settings, local: Backend, models: tuple[str, str]
) -> None:
    promotion = blue_green_deploy(settings, models[0], print, backend=local)

    deletion = delete_endpoint(settings, promotion.endpoint.name, print, backend=local)

    assert deletion.api_cleared and local.api.current() is None
    status, body = predict(promotion.api.url)
    assert status == 503 and body["error"] == "no model is deployed"
    with pytest.raises(SentiflowError, match="no endpoint named"):
        delete_endpoint(settings, promotion.endpoint.name, print, backend=local)


def test_rollback_needs_history(settings: Settings) -> None:
    with pytest.raises(SentiflowError, match="no model was ever promoted"):
        rollback(settings, print)
