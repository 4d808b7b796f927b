"""The sentiflow pipeline: data → training → evaluation → gate → deploy → API. Flows only wire stages.

``data_flow`` runs the data half; ``pipeline`` runs everything. Every argument left as ``None`` comes from the
settings (``SENTIFLOW_*`` environment variables), so a deployment, the CLI and a test all call the same code.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from sentiflow.config import Settings, get_settings
from tasks.data.stages import download_task, load_task, prepare_task, upload_task, validate_task


def _run_dir(settings: Settings) -> str:
    name = flow_run.get_name() or "adhoc"
    path = settings.runs_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def prepare_data(
    settings: Settings, source: str | None, sha256: str | None, max_reviews_per_class: int | None
) -> dict[str, Any]:
    """Wire the data stages; returns what later stages and the summary need."""
    archive = download_task(settings, source, sha256)
    dataset = load_task(settings, archive)
    validation = validate_task(settings, dataset, f"{_run_dir(settings)}/validation")
    channels = prepare_task(settings, dataset, archive.sha256, max_reviews_per_class)
    uploaded = upload_task(settings, channels)
    return {
        "archive": archive.to_dict(),
        "dataset": dataset,
        "validation": validation,
        "channels": channels.to_dict(),
        "uploaded": uploaded.to_dict(),
    }


@flow(name="sentiflow-data", log_prints=True)
def data_flow(
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
) -> dict[str, Any]:
    """Download, validate, preprocess and upload the IMDB dataset."""
    settings = get_settings(backend=backend)
    return prepare_data(settings, source, sha256, max_reviews_per_class)
