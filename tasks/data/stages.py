"""The data stages as Prefect tasks: download → load → validate → prepare channels → upload.

Each task is a thin wrapper over a plain function in this package; results are small (paths, URIs, counts), so
Prefect can persist and cache them cheaply. Errors the user must fix (``SentiflowError``) are never retried.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from backends.base import get_store
from sentiflow.config import Settings
from sentiflow.io import atomic_path
from tasks.data.channels import ChannelSet, prepare_channels
from tasks.data.download import DownloadedArchive, download_archive
from tasks.data.extract import load_archive
from tasks.data.upload import UploadedChannels, upload_channels
from tasks.policies import LOCAL_RETRIES, NETWORK_RETRIES, NO_RETRIES, STAGE_CACHE_POLICY, STAGE_OPTIONS


def dataset_path(settings: Settings, archive_sha256: str) -> Path:
    return settings.cache_dir / "datasets" / archive_sha256[:20] / "reviews.parquet"


@task(
    name="download",
    cache_policy=STAGE_CACHE_POLICY,
    persist_result=True,
    timeout_seconds=3600,
    **NETWORK_RETRIES,
)
def download_task(settings: Settings, source: str | None, sha256: str | None) -> DownloadedArchive:
    """Fetch and verify the IMDB archive (cached by source + hash)."""
    logger = get_run_logger()
    result = download_archive(settings, source, sha256)
    if result.cached:
        logger.info("download: cache hit for %s (%s, %.1f MB)", result.source, result.sha256[:12], result.size / 1e6)
    else:
        logger.info("download: fetched %s in %.1f s (sha256 %s)", result.source, result.seconds, result.sha256)
    return result


@task(name="load-dataset", **STAGE_OPTIONS, **LOCAL_RETRIES)
def load_task(settings: Settings, archive: DownloadedArchive) -> str:
    """Read the aclImdb layout from the archive into ``reviews.parquet`` (cached by the archive's hash)."""
    logger = get_run_logger()
    target = dataset_path(settings, archive.sha256)
    if target.is_file():
        logger.info("load: cache hit %s", target)
        return str(target)
    frame = load_archive(Path(archive.path))
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    logger.info("load: %d reviews → %s", len(frame), target)
    return str(target)


# Keyed on the dataset and settings, not on where this run writes its report: a cache hit returns the earlier
# report's location.
@task(name="validate-dataset", cache_policy=STAGE_CACHE_POLICY - "report_dir", persist_result=True, **NO_RETRIES)
def validate_task(settings: Settings, dataset: str, report_dir: str) -> dict:
    """Run the Great Expectations suite; stop the flow with every failed expectation named."""
    import pandas as pd

    from tasks.validate import raise_for_failures, validate_dataset, validation_markdown

    report = validate_dataset(pd.read_parquet(dataset), settings, Path(report_dir), source=dataset)
    create_markdown_artifact(
        key="data-validation", markdown=validation_markdown(report), description="IMDB dataset validation"
    )
    raise_for_failures(report)
    get_run_logger().info("validate: all %d checks passed (report in %s)", len(report.results), report_dir)
    return {"checks": len(report.results), "report_dir": report_dir}


@task(name="prepare-channels", **STAGE_OPTIONS, **LOCAL_RETRIES)
def prepare_task(
    settings: Settings, dataset: str, archive_sha256: str, max_reviews_per_class: int | None
) -> ChannelSet:
    """Tokenize, build the vocabulary and write the train/validation/test channels (cached)."""
    import pandas as pd

    logger = get_run_logger()
    channels = prepare_channels(pd.read_parquet(dataset), archive_sha256, settings, max_reviews_per_class)
    if channels.cached:
        logger.info("preprocess: cache hit %s — no preprocessing work done", channels.root)
    else:
        rate = sum(channels.counts.values()) / max(channels.seconds, 1e-9)
        logger.info(
            "preprocess: %s in %.1f s (%.0f reviews/s) → %s",
            channels.counts,
            channels.seconds,
            rate,
            channels.root,
        )
    create_table_artifact(
        key="channels",
        table=[{"channel": name, "rows": rows} for name, rows in channels.counts.items()],
        description=f"Training channels {channels.key} (vocabulary {channels.vocabulary_size})",
    )
    return channels


@task(name="upload-channels", **STAGE_OPTIONS, **NETWORK_RETRIES)
def upload_task(settings: Settings, channels: ChannelSet) -> UploadedChannels:
    """Put the channel files into the backend's artifact store (unchanged files are skipped)."""
    result = upload_channels(Path(channels.root), channels.key, get_store(settings))
    get_run_logger().info(
        "upload: %d files sent, %d already there → %s",
        len(result.uploaded),
        len(result.skipped),
        result.channels,
    )
    return result
