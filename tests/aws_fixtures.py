"""A session-wide moto server on 127.0.0.1, a clean AWS environment per test, and a "moto world" per test.

No test here reaches AWS: every boto3 client goes to the moto server through ``AWS_ENDPOINT_URL``, with dummy
credentials, ``AWS_MAX_ATTEMPTS=1`` (moto answers unimplemented actions with HTTP 500, which botocore would
retry) and the shared config files pointed at nothing.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentiflow.config import Settings
from tests.backends.aws.moto_world import MotoWorld

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_RETRY_MODE": "standard",
    "SAGEMAKER_VALIDATE_ROLE": "false",
    "SENTIFLOW_AWS_POLL_SECONDS": "0.05",
}
CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "SENTIFLOW_AWS_CREDENTIALS_BLOCK",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The URL of a moto server running in this process (threaded), for the whole session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point every AWS client at the moto server (reset first); returns its URL."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    import os

    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL_"):
            monkeypatch.delenv(name)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10)
    return moto_server


@pytest.fixture
def moto_world(aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoWorld]:
    """Bucket and roles created, SageMaker "played" by the local implementations (see moto_world.py)."""
    world = MotoWorld(aws_env, monkeypatch, work_dir=tmp_path / "moto-world")
    world.setup()
    world.play_sagemaker()
    yield world
    world.join()


@pytest.fixture
def aws_settings(moto_world: MotoWorld, tmp_path: Path) -> Settings:
    """Settings for the aws backend against the moto world (small synthetic sizes, like ``settings``)."""
    return Settings(
        home=tmp_path / "home",
        backend="aws",
        expected_rows_per_split=200,
        vocab_size=60,
        max_len=80,
        **moto_world.settings_overrides(),
    )
