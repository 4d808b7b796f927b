"""The aws backend: S3 artifact store, SageMaker training / batch transform / endpoints, Lambda + HTTP API.

``make_backend(settings)`` builds it; nothing here imports boto3 or the SageMaker SDK at import time (each
module imports them inside the functions that call AWS). See docs/aws.md for prerequisites, roles and costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.base import Backend

if TYPE_CHECKING:
    from core.config import Settings


def make_backend(settings: Settings) -> Backend:
    """The aws :class:`~backends.base.Backend` for ``settings`` (ConfigError when no bucket is configured)."""
    from backends.aws.api import LambdaHttpApi
    from backends.aws.clients import AwsClients
    from backends.aws.endpoints import SageMakerEndpoints
    from backends.aws.storage import S3ArtifactStore
    from backends.aws.training import SageMakerTrainer
    from backends.aws.transform import SageMakerBatchTransformer

    clients = AwsClients(settings)
    store = S3ArtifactStore(clients, settings.aws_bucket or "", settings.aws_prefix)
    return Backend(
        name="aws",
        store=store,
        trainer=SageMakerTrainer(settings, clients, store),
        transformer=SageMakerBatchTransformer(settings, clients, store),
        endpoints=SageMakerEndpoints(settings, clients, store),
        api=LambdaHttpApi(settings, clients),
    )


def make_store(settings: Settings):  # noqa: ANN201 - S3ArtifactStore, imported lazily
    """Only the S3 artifact store (the data stages need nothing else)."""
    from backends.aws.clients import AwsClients
    from backends.aws.storage import S3ArtifactStore

    return S3ArtifactStore(AwsClients(settings), settings.aws_bucket or "", settings.aws_prefix)
