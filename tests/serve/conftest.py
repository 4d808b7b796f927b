"""Fixtures of the serving tests: the in-process toolkit and the TorchServe tier (tests/fixtures/serving.py,
tests/fixtures/torchserve.py)."""

from tests.fixtures.serving import toolkit  # noqa: F401
