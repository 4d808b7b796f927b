"""Result storage: a *saved* filesystem block that holds every persisted stage result (the cache records).

- local backend: ``LocalFileSystem(basepath=<SENTIFLOW_HOME>/prefect-results)`` saved as
  ``local-file-system/sentiflow-results``;
- aws backend: ``S3Bucket(bucket_name=SENTIFLOW_AWS_BUCKET, bucket_folder=<prefix>/prefect-results)`` saved as
  ``s3-bucket/sentiflow-results`` (credentials from the ``SENTIFLOW_AWS_CREDENTIALS_BLOCK`` block if set).

:func:`ensure_result_storage` saves the block and (by default) makes it the **server's default result
storage**, so every flow run against that server — worker-run deployments and ``sentiflow run`` alike —
persists there without a ``result_storage=`` on the flow. ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``, if set,
still wins.
"""

from __future__ import annotations

from pathlib import Path

from core.config import Settings
from core.errors import ConfigError
from sentiflow.ops import RESULT_STORAGE_BLOCK


def local_results_dir(settings: Settings) -> Path:
    """Where the local backend's result records live."""
    return settings.home / "prefect-results"


def result_storage_slug(settings: Settings, name: str = RESULT_STORAGE_BLOCK) -> str:
    """``<block-type-slug>/<name>`` of the result storage block for the configured backend."""
    return f"{'s3-bucket' if settings.backend == 'aws' else 'local-file-system'}/{name}"


def ensure_result_storage(settings: Settings, name: str = RESULT_STORAGE_BLOCK, make_default: bool = True) -> str:
    """Create or update the result storage block; returns its slug for ``result_storage=``.

    With ``make_default`` the block also becomes the server's default result storage. Needs a Prefect API (a
    server, or the ephemeral one a plain ``sentiflow run`` starts); ConfigError for an incomplete aws setup.
    """
    from prefect.client.orchestration import get_client

    if settings.backend == "aws":
        block_id = _save_s3_block(settings, name)
    else:
        from prefect.filesystems import LocalFileSystem

        folder = local_results_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        block_id = LocalFileSystem(basepath=str(folder)).save(name, overwrite=True)
    if make_default:
        with get_client(sync_client=True) as client:
            client.update_server_default_result_storage(block_id)
    return result_storage_slug(settings, name)


def _save_s3_block(settings: Settings, name: str) -> object:
    """Save the S3Bucket result block for the aws backend."""
    from prefect_aws import AwsCredentials, S3Bucket

    if not settings.aws_bucket:
        raise ConfigError(
            "the aws backend stores Prefect results in S3 but SENTIFLOW_AWS_BUCKET is not set; "
            "set it to a bucket the pipeline may write to"
        )
    if settings.aws_credentials_block:
        credentials = AwsCredentials.load(settings.aws_credentials_block)
    else:
        credentials = AwsCredentials(region_name=settings.aws_region)
    block = S3Bucket(
        bucket_name=settings.aws_bucket,
        bucket_folder=f"{settings.aws_prefix.strip('/')}/prefect-results",
        credentials=credentials,
    )
    return block.save(name, overwrite=True)
