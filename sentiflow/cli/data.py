"""``sentiflow data …``: prepare and validate the IMDB dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.config import get_settings
from sentiflow.ops.runtime import configure_environment, configure_flow_run

SourceOption = Annotated[
    str | None,
    typer.Option("--source", help="Archive URL (http(s)://, file://, s3://) or path. [default: SENTIFLOW_DATA_URL]"),
]
Sha256Option = Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of a non-official archive.")]
PerClassOption = Annotated[
    int | None,
    typer.Option("--max-reviews-per-class", min=1, help="Subsample each split and class (quick runs)."),
]
VocabOption = Annotated[
    int | None, typer.Option("--vocab-size", min=3, help="Vocabulary size. [default: SENTIFLOW_VOCAB_SIZE, 5000]")
]
MaxLenOption = Annotated[
    int | None, typer.Option("--max-len", min=1, help="Tokens per review. [default: SENTIFLOW_MAX_LEN, 500]")
]

FullRunOption = Annotated[
    bool,
    typer.Option(
        "--full-run",
        help="Run the Prefect flow even when the up-to-date check finds nothing changed (the run then shows in "
        "the Prefect UI).",
    ),
]

NO_FLOW_RUN = (
    "            up to date: checked against Prefect's cache records without starting a flow run, so no run shows in "
    "the Prefect UI (--full-run runs the flow)"
)

data_app = typer.Typer(help="Download, validate and preprocess the IMDB dataset.", no_args_is_help=True)


def print_reused(reused: dict[str, bool]) -> None:
    """One line: which stages Prefect served from its cache (finished work reused) and which ran."""
    hits = [stage for stage, hit in reused.items() if hit]
    ran = [stage for stage, hit in reused.items() if not hit]
    if not ran:
        typer.echo(f"reused      all {len(hits)} stages: nothing changed ({', '.join(hits)})")
    elif hits:
        typer.echo(f"reused      {len(hits)} of {len(reused)} stages ({', '.join(hits)}); ran {', '.join(ran)}")
    else:
        typer.echo(f"reused      none: all {len(ran)} stages ran")


def print_data_summary(summary: dict) -> None:
    archive, channels, validation = summary["archive"], summary["channels"], summary["validation"]
    counts = channels["counts"]
    typer.echo(f"archive     {archive['uri']} ({archive['size'] / 1e6:.1f} MB, sha256 {archive['sha256'][:16]}…)")
    typer.echo(f"validation  {validation['checks']} checks passed, report: {validation['report']}")
    typer.echo(
        f"channels    train {counts['train']:,} · validation {counts['validation']:,} · test {counts['test']:,} "
        f"· vocabulary {channels['vocabulary_size']:,}"
    )
    for name, uri in channels["channels"].items():
        typer.echo(f"            {name:<10} {uri}")


@data_app.command("prepare")
def prepare(
    source: SourceOption = None,
    sha256: Sha256Option = None,
    max_reviews_per_class: PerClassOption = None,
    vocab_size: VocabOption = None,
    max_len: MaxLenOption = None,
    full_run: FullRunOption = False,
) -> None:
    """Run the data stages (download → validate → preprocess → channels in the store) as a Prefect flow.

    First an up-to-date check: when Prefect's cache records say every stage would be reused and their outputs are
    still in the store, it reports them and stops, without importing Prefect (``flows.data.up_to_date``)."""
    settings = get_settings(vocab_size=vocab_size, max_len=max_len)
    if not full_run:
        from flows.data import up_to_date
        from sentiflow.ops.storage import local_results_dir

        cached = up_to_date(settings, source, sha256, max_reviews_per_class, local_results_dir(settings))
        if cached is not None:
            print_data_summary(cached)
            print_reused(cached["reused"])
            typer.echo(NO_FLOW_RUN)
            return
    configure_flow_run(settings, typer.echo)
    from flows.pipeline import data_flow

    summary = data_flow(
        source=source,
        sha256=sha256,
        max_reviews_per_class=max_reviews_per_class,
        vocab_size=vocab_size,
        max_len=max_len,
    )
    print_data_summary(summary)
    print_reused(summary["reused"])


@data_app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="An extracted aclImdb folder (or its parent).")],
    report_dir: Annotated[Path | None, typer.Option(help="Where to write validation.json and Data Docs.")] = None,
) -> None:
    """Run the Great Expectations suite on an extracted aclImdb folder; exit 1 if any check fails."""
    settings = get_settings()
    configure_environment(settings)
    from tasks.data.load import load_aclimdb_dir
    from tasks.data.validate import validate_dataset

    report_dir = report_dir or settings.runs_dir / "validate-dir"
    report = validate_dataset(load_aclimdb_dir(directory), settings, report_dir, source=str(directory))
    for result in report.results:
        mark = "ok  " if result.success else "FAIL"
        typer.echo(f"{mark} {result.check}: expected {result.expected}, observed {result.observed}")
    typer.echo(f"report: {report.report_path}  ·  Data Docs: {report.data_docs_index}")
    if not report.success:
        typer.secho(f"{len(report.failures)} of {len(report.results)} checks failed", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
