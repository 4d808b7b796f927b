"""Model tests run torch on one thread (tiny networks gain nothing from more on a shared 2-core machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny networks gain nothing from intra-op threads, and spinning threads crawl on a shared machine."""
    import torch

    torch.set_num_threads(1)
