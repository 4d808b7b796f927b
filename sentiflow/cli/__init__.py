"""The ``sentiflow`` command line.

Each module in this package adds its commands through ``register(app)``; heavy imports (torch, prefect, boto3)
happen inside the commands so that ``sentiflow --help`` stays fast. Errors the user can fix
(:class:`core.errors.SentiflowError`) are printed on one line with exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from core.errors import SentiflowError

app = typer.Typer(
    name="sentiflow",
    help="Train, evaluate, deploy and retire an IMDB sentiment model — locally or on AWS SageMaker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _register = getattr(importlib.import_module(f"{__name__}.{_module.name}"), "register", None)
    if _register is not None:
        _register(app)


def main() -> None:
    """Console entry point: click handles usage errors and exit codes; a SentiflowError becomes one line."""
    try:
        app()
    except SentiflowError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
