"""Serving fixtures: the tiny trained model (shared across the session) and it loaded."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve.tiny_model import TinyModel


@pytest.fixture(scope="session")
def tiny_loaded(tiny: TinyModel) -> Any:
    from serve.inference import model_fn

    return model_fn(str(tiny.model_dir))
