"""The test session: which fixture modules load, the ``settings`` fixture, and the guard that keeps unit tests
off servers and off the network.

Fixture modules live in ``tests/fixtures/`` (data, tiny model, browser, local servers, aws/moto, Prefect). A test
that starts a server (Prefect, moto, an endpoint, the API gateway, a browser) or runs a whole flow is marked
``e2e`` and requests what it needs (``prefect_api``, ``moto_world``, ``local``, ``browser`` …). Every other test
is a unit test: it gets no Prefect API, Prefect may not start a temporary ("ephemeral") server for it, and it
may neither listen on a TCP port nor connect beyond 127.0.0.1 — so one that needs a server fails fast instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports Prefect: never a temporary server (PREFECT_SERVER_ALLOW_EPHEMERAL_MODE is its alias).
os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
# Under pytest-xdist (`make test` runs lanes), each lane's Prefect client keeps its files in a home of its own.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("PREFECT_HOME"):
    os.environ["PREFECT_HOME"] = f"{os.environ['PREFECT_HOME']}-{os.environ['PYTEST_XDIST_WORKER']}"

from core.config import Settings  # noqa: E402

pytest_plugins = [
    "tests.fixtures.synthetic",
    "tests.fixtures.tiny_model",
    "tests.fixtures.browser",
    "tests.fixtures.local",
    "tests.fixtures.aws",
    "tests.fixtures.prefect",
]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with a fresh SENTIFLOW_HOME in tmp_path and small expectations for synthetic data."""
    monkeypatch.setenv("SENTIFLOW_HOME", str(tmp_path / "home"))
    return Settings(home=tmp_path / "home", expected_rows_per_split=200, vocab_size=60, max_len=80)


# --- the unit-test guard --------------------------------------------------------------------------------------

SERVER_FIXTURES = frozenset(
    {
        "prefect_api",
        "prefect_server",
        "prefect_deployed",
        "prefect_worker",
        "notify_receiver",
        "moto_server",
        "aws_env",
        "moto_world",
        "aws_settings",
        "local",
        "gateway",
        "browser",
    }
)
"""Fixtures that start servers: only tests marked ``e2e`` may request them."""

_INET = (socket.AF_INET, socket.AF_INET6)


def _is_e2e(item: pytest.Item) -> bool:
    return item.get_closest_marker("e2e") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that requests a server fixture without the ``e2e`` mark is a usage error, reported before any run."""
    wrong = [
        f"{item.nodeid} uses {', '.join(sorted(SERVER_FIXTURES & set(getattr(item, 'fixturenames', ()))))}"
        for item in items
        if not _is_e2e(item) and SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    if wrong:
        raise pytest.UsageError("tests that start servers must be marked e2e:\n  " + "\n  ".join(wrong))


def _loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(original: Any, what: str, allowed: Any, nodeid: str) -> Any:
    def method(self: socket.socket, address: Any, *args: Any) -> Any:
        if self.family in _INET and not allowed(address):
            raise RuntimeError(
                f"unit test {nodeid} tried to {what} {address!r}: a test that starts a server or uses the network "
                "is marked e2e and requests its fixture (see tests/conftest.py)"
            )
        return original(self, address, *args)

    return method


@contextlib.contextmanager
def _no_servers_no_network(item: pytest.Item) -> Iterator[None]:
    """While a unit test and the fixtures it sets up run: no listening TCP socket, no connection beyond loopback
    (a refused connection to a closed local port is fine)."""
    if _is_e2e(item):
        yield
        return
    originals = {name: getattr(socket.socket, name) for name in ("bind", "connect", "connect_ex")}
    socket.socket.bind = _guarded(originals["bind"], "listen on", lambda address: False, item.nodeid)
    socket.socket.connect = _guarded(originals["connect"], "connect to", _loopback, item.nodeid)
    socket.socket.connect_ex = _guarded(originals["connect_ex"], "connect to", _loopback, item.nodeid)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(socket.socket, name, original)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _no_servers_no_network(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _no_servers_no_network(item):
        yield


@pytest.fixture(autouse=True)
def _unit_tests_have_no_prefect_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For tests not marked ``e2e``: no Prefect API and no ephemeral Prefect server, so a unit test that needs a
    server fails at once ("No Prefect API URL provided") instead of booting one."""
    if _is_e2e(request.node):
        yield
        return
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
    if "prefect" not in sys.modules:
        yield  # Prefect, if the test imports it, reads the environment set above
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: False}, restore_defaults={PREFECT_API_URL}):
        yield
