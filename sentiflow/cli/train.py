"""``sentiflow train``: run the data and training stages, print where the model artifact is."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from core.config import get_settings
from sentiflow.cli.data import MaxLenOption, Sha256Option, SourceOption, VocabOption, print_data_summary, print_reused
from sentiflow.ops.runtime import configure_flow_run


def _option(flag: str, help_text: str, **limits: Any) -> Any:
    return typer.Option(flag, help=f"{help_text} Default: from settings.", **limits)


def hyperparameter_overrides(**values: Any) -> dict[str, Any]:
    """The hyperparameters given on the command line (None = not given)."""
    return {name: value for name, value in values.items() if value is not None}


def train(
    source: SourceOption = None,
    sha256: Sha256Option = None,
    epochs: Annotated[int | None, _option("--epochs", "Training epochs.", min=1)] = None,
    hidden_dim: Annotated[int | None, _option("--hidden-dim", "LSTM hidden units.", min=1)] = None,
    embedding_dim: Annotated[int | None, _option("--embedding-dim", "Word embedding size.", min=1)] = None,
    batch_size: Annotated[int | None, _option("--batch-size", "Training batch size.", min=1)] = None,
    learning_rate: Annotated[float | None, _option("--learning-rate", "Adam learning rate.", min=0.0)] = None,
    architecture: Annotated[
        str | None, _option("--architecture", "Network: bilstm-pool, lstm-pool or reference.")
    ] = None,
    ranks: Annotated[
        int | None,
        _option("--ranks", "Training instances, one torch DDP rank each (SENTIFLOW_TRAIN_INSTANCE_COUNT).", min=1),
    ] = None,
    vocab_size: VocabOption = None,
    max_len: MaxLenOption = None,
) -> None:
    """Prepare the data and train the model (finished stages are reused from Prefect's cache); print the artifact."""
    if ranks is not None:  # the stages read their settings themselves
        os.environ["SENTIFLOW_TRAIN_INSTANCE_COUNT"] = str(ranks)
    overrides = hyperparameter_overrides(
        epochs=epochs,
        hidden_dim=hidden_dim,
        embedding_dim=embedding_dim,
        batch_size=batch_size,
        learning_rate=learning_rate,
        architecture=architecture,
    )
    # Bad values fail here, named as flags, before any server or data work (Prefect is not imported yet: its
    # settings are read once, at import, and configure_flow_run sets the API first).
    settings = get_settings(vocab_size=vocab_size, max_len=max_len, **overrides)
    configure_flow_run(settings, typer.echo)
    from flows.pipeline import train_flow

    summary = train_flow(
        source=source, sha256=sha256, hyperparameters=overrides, vocab_size=vocab_size, max_len=max_len
    )
    print_data_summary(summary["data"])
    result, metrics = summary["training"], summary["training"]["metrics"]
    typer.echo(f"training    {result['job_name']} ({result['duration_s']:.0f} s)")
    typer.echo(
        f"best epoch  {metrics['best_epoch']} of {metrics['epochs_run']}: "
        f"val_loss {metrics['val_loss']:.4f} · val_accuracy {metrics['val_accuracy']:.4f}"
    )
    typer.echo(f"model       {result['model_uri']}")
    print_reused(summary["reused"])


def register(app: typer.Typer) -> None:
    app.command("train")(train)
