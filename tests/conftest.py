"""Shared fixtures: settings in a temporary home, the shared IMDB mirror (skipped when absent), synthetic data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentiflow.config import Settings
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.synthetic import write_archive

# The moto server and the aws "world" (tests/aws_fixtures.py), and the real Prefect server, worker and notification
# receiver (tests/prefect_ops/fixtures.py), for tests in any folder.
pytest_plugins = ["tests.aws_fixtures", "tests.prefect_ops.fixtures"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SENTIFLOW_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
IMDB_MIRROR = SHARED_DATA / "aclImdb_v1_labeled.tar.gz"
IMDB_MIRROR_SHA256 = "fc132c2a23a4d23eec474b518907765dbc9c59e648c1e57ac8010670238ed697"
NLTK_DATA = SHARED_DATA / "nltk_data"


@pytest.fixture(scope="session")
def imdb_archive() -> Path:
    """The shared IMDB mirror (``../shared/data``); the test is skipped when it is absent."""
    if not IMDB_MIRROR.is_file():
        pytest.skip(f"IMDB mirror not found at {IMDB_MIRROR} (see ../shared/data/README.md)")
    return IMDB_MIRROR


@pytest.fixture(scope="session")
def nltk_data_dir() -> Path:
    if not (NLTK_DATA / "corpora" / "stopwords.zip").is_file():
        pytest.skip(f"NLTK stopwords corpus not found under {NLTK_DATA} (see ../shared/data/README.md)")
    return NLTK_DATA


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with a fresh SENTIFLOW_HOME in tmp_path and small expectations for synthetic data."""
    monkeypatch.setenv("SENTIFLOW_HOME", str(tmp_path / "home"))
    return Settings(home=tmp_path / "home", expected_rows_per_split=200, vocab_size=60, max_len=80)


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny aclImdb archive: 100 reviews per split and class."""
    return write_archive(tmp_path_factory.mktemp("synthetic"), per_class=100)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser); skips when it is absent.

    Per test: Playwright's sync API keeps an asyncio loop running on this thread while it is open, which would make
    Prefect's sync calls in later tests return coroutines."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install .[dev])")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture(scope="session", autouse=True)
def prefect_api(prefect_server) -> str:  # noqa: ANN001 - PrefectStack from tests/prefect_ops
    """One Prefect API for the whole session, for every test: the server ``make test`` started
    (``SENTIFLOW_TEST_PREFECT_API_URL``), else one started here. One per process, because Prefect's event and
    log workers bind to the first API they talk to."""
    return prefect_server.api_url


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real model trained once per session on synthetic reviews (tests/serve/tiny_model.py)."""
    from tests.serve.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


@pytest.fixture(scope="session")
def tiny(tiny_model: Any) -> Any:
    """Short name of ``tiny_model`` (the serving and evaluation tests use it)."""
    return tiny_model


@pytest.fixture
def local(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The local backend's endpoint manager and API gateway (on a free port), stopped afterwards; it never trains."""
    from backends.base import Backend
    from backends.local.api import LocalApiGateway
    from backends.local.endpoints import LocalEndpointManager
    from backends.local.storage import LocalArtifactStore

    monkeypatch.setenv("SENTIFLOW_API_PORT", "0")
    settings = settings.with_overrides(api_port=0)
    store = LocalArtifactStore(settings.store_dir)
    endpoints = LocalEndpointManager(settings, store, drain_timeout_s=15)
    api = LocalApiGateway(settings)
    yield Backend("local", store, None, None, endpoints, api)  # type: ignore[arg-type]
    api.stop()
    for info in endpoints.list():
        endpoints.delete(info.name, drain_timeout_s=2)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Any]:
    """The local API gateway (serve/gateway.py) serving in a thread on a free port."""
    import threading

    from serve.gateway import make_gateway

    server = make_gateway(settings, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
