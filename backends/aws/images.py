"""AWS Deep Learning Container image URIs for PyTorch training and inference.

This is the one place sentiflow uses the SageMaker Python SDK: ``sagemaker.core.image_uris.retrieve`` is a
local lookup in the SDK's maintained JSON tables (account per region, CPU/GPU tag per instance type, version
aliases), so it earns its place; it makes no network call and fires no telemetry. Everything else is plain
boto3.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.config import Settings


@functools.lru_cache(maxsize=32)
def _retrieve(region: str, version: str, py_version: str, instance_type: str, scope: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve("pytorch", region, version, py_version, instance_type=instance_type, image_scope=scope)


def pytorch_image_uri(settings: Settings, region: str, instance_type: str, scope: str) -> str:
    """The PyTorch DLC for ``scope`` (``"training"``/``"inference"``); ConfigError if unknown."""
    try:
        return _retrieve(region, settings.aws_framework_version, settings.aws_py_version, instance_type, scope)
    except ValueError as error:
        raise ConfigError(
            f"no AWS PyTorch {scope} image for framework {settings.aws_framework_version!r}, python "
            f"{settings.aws_py_version!r}, {instance_type} in {region}: {error}; set "
            "SENTIFLOW_AWS_FRAMEWORK_VERSION and SENTIFLOW_AWS_PY_VERSION to a listed pair "
            "(e.g. 2.5 + py311, which has training and inference images)"
        ) from error
