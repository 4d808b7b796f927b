"""Faults made to really happen on the local backend, under load (issue 13): the live endpoint killed with SIGKILL,
a 60 s soak of 32 clients with good and bad requests, the same soak across a blue/green redeploy.

Figures: ``pytest tests/backends/local/test_faults.py -m e2e`` prints one ``soak …`` line per soak (p50/p95/p99).
``SENTIFLOW_SOAK_SECONDS`` shortens the 60 s soak for a quick local check.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from backends.base import Backend
from core.config import Settings
from tasks.deploy import blue_green_deploy
from tests.fixtures.soak import soak
from tests.fixtures.tiny_model import TinyModel

pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.timeout(300)]

SOAK_SECONDS = float(os.environ.get("SENTIFLOW_SOAK_SECONDS", "60"))


@pytest.fixture
def models(tiny_model: TinyModel, local: Backend) -> tuple[str, str]:
    """Two model artifacts in the store (distinct URIs, so two versions)."""
    first, _ = local.store.put_file(tiny_model.tar_path, "jobs/first/model.tar.gz")
    second, _ = local.store.put_file(tiny_model.tar_path, "jobs/second/model.tar.gz")
    return first, second


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


@dataclass
class Load:
    """Clients sending good requests from threads; every answer with its send time and latency."""

    url: str
    clients: int = 8
    answers: list[tuple[float, float, int, str | None]] = field(default_factory=list)  # (sent, seconds, status, ver)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/predict", json={"review": "a wonderful, brilliant film"})
                    status, version = response.status_code, response.json().get("model_version")
                except (httpx.HTTPError, ValueError):
                    status, version = -1, None
                self.answers.append((sent, time.monotonic() - sent, status, version))

    def __enter__(self) -> Load:
        self.pool = ThreadPoolExecutor(self.clients)
        self.futures = [self.pool.submit(self._run) for _ in range(self.clients)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for future in self.futures:
            future.result(timeout=60)
        self.pool.shutdown()

    def wait(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        target = len(self.answers) + count
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.01)


def test_kill_9_of_the_live_endpoint_under_load(
    settings: Settings, local: Backend, models: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL of the endpoint the API serves: every request answers 503/502 within 1 s (none hangs), the endpoint
    lists as Failed, and the next deploy restores service (and retires the dead endpoint)."""
    first = blue_green_deploy(settings, models[0], print, backend=local)
    with Load(first.api.url) as load:
        load.wait(50)
        killed_at = time.monotonic()
        os.killpg(first.endpoint.extra["pid"], signal.SIGKILL)  # the server and its workers
        time.sleep(3)
        after_kill = [a for a in load.answers if a[0] > killed_at + 0.05]
        assert len(after_kill) > 20
        assert {status for _, _, status, _ in after_kill} <= {502, 503}, {a[2] for a in after_kill}
        slowest = max(seconds for _, seconds, _, _ in after_kill)
        assert slowest < 1.0, f"slowest answer after the kill took {slowest:.2f} s"
        in_flight = [a for a in load.answers if a[0] <= killed_at <= a[0] + a[1]]
        assert all(sent + seconds - killed_at < 1.0 for sent, seconds, _, _ in in_flight)  # none hung either

        assert local.endpoints.get(first.endpoint.name).status == "Failed"
        assert {e.name: e.status for e in local.endpoints.list()} == {first.endpoint.name: "Failed"}

        second = blue_green_deploy(settings, models[1], print, backend=local)
        restored_at = time.monotonic()
        load.wait(30)
    assert second.replaced == (first.endpoint.name,)
    restored = [a for a in load.answers if a[0] > restored_at]
    assert restored and {(status, version) for _, _, status, version in restored} == {(200, str(second.version))}
    assert [e.name for e in local.endpoints.list()] == [second.endpoint.name]
    report(capsys, f"kill -9 under load: {len(after_kill)} answers in the 3 s after the kill, all 502/503, slowest "
           f"{slowest * 1000:.0f} ms; the next deploy (v{second.version}) restored 200s")  # fmt: skip


def test_soak_32_clients_mixed_good_and_bad_then_across_a_blue_green_redeploy(
    settings: Settings, local: Backend, models: tuple[str, str], tiny_model: TinyModel, capsys: pytest.CaptureFixture
) -> None:
    """60 s of 32 clients, a third of their requests bad: no good request fails, every bad one gets its 4xx. Then the
    same load across today's blue/green redeploy (it starts 2 s in; the soak runs on until 3 s after it finished)."""
    blue = blue_green_deploy(settings, models[0], print, backend=local)
    steady = soak(blue.api.url, tiny_model.test_reviews, SOAK_SECONDS, clients=32)
    report(capsys, steady.summary("steady"))
    assert steady.good_failures == [], steady.good_failures[:5]
    assert steady.bad_failures == [], steady.bad_failures[:5]
    assert len(steady.good_latencies_s) > 100 and len(steady.bad_latencies_s) > 30

    green: list = []
    done = threading.Event()

    def redeploy() -> None:
        time.sleep(2.0)
        try:
            green.append(blue_green_deploy(settings, models[1], print, backend=local))
        finally:
            time.sleep(3.0)
            done.set()

    thread = threading.Thread(target=redeploy, daemon=True)
    thread.start()
    switching = soak(blue.api.url, tiny_model.test_reviews, 10.0, clients=32, until=done)
    thread.join(timeout=60)
    report(capsys, switching.summary("across a blue/green redeploy"))
    assert green and green[0].replaced == (blue.endpoint.name,)
    assert switching.good_failures == [], switching.good_failures[:5]
    assert switching.bad_failures == [], switching.bad_failures[:5]
    assert switching.versions[0] == str(blue.version) and switching.versions[-1] == str(green[0].version)
