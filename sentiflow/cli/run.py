"""``sentiflow run``: the main job — the whole pipeline, ending with the page and API URLs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.config import get_settings
from sentiflow.cli.data import (
    MaxLenOption,
    PerClassOption,
    Sha256Option,
    SourceOption,
    VocabOption,
    print_data_summary,
    print_reused,
)
from sentiflow.ops.runtime import configure_flow_run


def print_pipeline_summary(summary: dict[str, Any]) -> None:
    """What a person wants to see at the end of a run."""
    print_data_summary(summary["data"])
    training, evaluation = summary["training"], summary["evaluation"]
    model, baseline = evaluation["model"], evaluation["baseline"]
    typer.echo(f"training    {training['job_name']} ({training['duration_s']:.0f} s) → {training['model_uri']}")
    typer.echo(
        f"evaluation  accuracy {model['accuracy']:.4f} · F1 {model['f1']:.4f} · ROC-AUC {model['roc_auc']:.4f} "
        f"(TF-IDF baseline {baseline['accuracy']:.4f})"
    )
    gate = summary["gate"]
    if not summary["promoted"]:
        print_reused(summary["reused"])
        typer.secho(f"not promoted: {gate['reason']}", fg=typer.colors.YELLOW)
        return
    promotion, parity = summary["promotion"], summary["parity"]
    endpoint, api = promotion["endpoint"], promotion.get("api") or {}
    if parity is not None:
        typer.echo(
            f"parity      passed: {parity['checked']:,} raw reviews through endpoint {endpoint['name']}, "
            f"{parity['mismatched']} differ from batch (max |Δscore| {parity['max_abs_diff']:.1e})"
        )
    print_reused(summary["reused"])
    if promotion.get("reused"):
        typer.echo(f"serving     version {promotion['version']} on endpoint {endpoint['name']}, already behind the API")
    else:
        typer.echo(f"promoted    version {promotion['version']} on endpoint {endpoint['name']} ({gate['reason']})")
    if summary.get("teardown"):
        typer.echo(f"teardown    endpoint {endpoint['name']} deleted (--teardown-after); the model stays in the store")
        return
    if api.get("page_url"):
        typer.secho(f"\nOpen {api['page_url']} and type a review.", fg=typer.colors.GREEN, bold=True)
    if api.get("url"):
        typer.echo(f'API: curl -s -d \'{{"review": "A wonderful film"}}\' {api["url"].rstrip("/")}/predict')


def run(
    source: SourceOption = None,
    sha256: Sha256Option = None,
    backend: Annotated[str | None, typer.Option(help="local or aws. [default: SENTIFLOW_BACKEND or local]")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs. [default: from settings]")] = None,
    vocab_size: VocabOption = None,
    max_len: MaxLenOption = None,
    min_accuracy: Annotated[float | None, typer.Option(min=0, max=1, help="Quality gate: lowest accuracy.")] = None,
    max_regression: Annotated[
        float | None, typer.Option(min=0, max=1, help="Quality gate: largest drop below the deployed model.")
    ] = None,
    parity_sample: Annotated[int | None, typer.Option(min=0, help="Raw test reviews in the parity check.")] = None,
    teardown_after: Annotated[
        bool, typer.Option("--teardown-after", help="Delete the endpoint at the end (train-and-evaluate runs).")
    ] = False,
    max_reviews_per_class: PerClassOption = None,
) -> None:
    """Run the whole pipeline: data → train → evaluate → gate → deploy → API."""
    overrides: dict[str, Any] = {
        "backend": backend,
        "epochs": epochs,
        "vocab_size": vocab_size,
        "max_len": max_len,
        "min_accuracy": min_accuracy,
        "max_regression": max_regression,
        "parity_sample": parity_sample,
    }
    settings = get_settings(**overrides)
    configure_flow_run(settings, typer.echo)
    from flows.pipeline import pipeline

    summary = pipeline(
        source=source,
        sha256=sha256,
        teardown_after=teardown_after,
        max_reviews_per_class=max_reviews_per_class,
        **overrides,
    )
    print_pipeline_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
