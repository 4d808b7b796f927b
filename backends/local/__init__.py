"""The local backend: files on disk, training as a subprocess, endpoints as local HTTP servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.base import Backend
    from core.config import Settings


def make_backend(settings: Settings) -> Backend:
    from backends.base import Backend
    from backends.local.api import LocalApiGateway
    from backends.local.endpoints import LocalEndpointManager
    from backends.local.storage import LocalArtifactStore
    from backends.local.training import LocalTrainer
    from backends.local.transform import LocalBatchTransformer

    store = LocalArtifactStore(settings.store_dir)
    return Backend(
        name="local",
        store=store,
        trainer=LocalTrainer(settings, store),
        transformer=LocalBatchTransformer(settings, store),
        endpoints=LocalEndpointManager(settings, store),
        api=LocalApiGateway(settings),
    )


def make_store(settings: Settings):  # noqa: ANN201
    """Only the artifact store (the data stages need nothing else)."""
    from backends.local.storage import LocalArtifactStore

    return LocalArtifactStore(settings.store_dir)
