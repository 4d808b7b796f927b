"""The ``sentiflow`` command line.

Each module in this package adds its commands through ``register(app)``; heavy imports (torch, prefect, boto3)
happen inside the commands so that ``sentiflow --help`` stays fast. Errors the user can fix — a bad flag (click's
usage errors), a bad ``SENTIFLOW_*`` value, anything raising :class:`core.errors.SentiflowError` — are printed on
one line with exit code 2, never a traceback; anything else (a bug) is one line naming the file that holds its
traceback, exit code 1.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from core.errors import SentiflowError
from core.redact import redact_text

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


# Typer carries its own click; its exception classes are reachable through the public BadParameter.
_CLICK = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError: type[Exception] = _CLICK["UsageError"]
ClickException: type[Exception] = _CLICK["ClickException"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Console entry point: usage errors and SentiflowErrors become one ``error: …`` line and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `sentiflow` alone: the help was printed
            sys.exit(0)
        ctx = getattr(error, "ctx", None)
        command = ctx.command_path if ctx is not None else "sentiflow"
        typer.secho(f"error: {_one_line(error.format_message())} (see `{command} --help`)", fg="red", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.secho("aborted", fg="red", err=True)
        sys.exit(130)
    except ClickException as error:
        typer.secho(f"error: {_one_line(error.format_message())}", fg="red", err=True)
        sys.exit(error.exit_code)
    except SentiflowError as error:
        typer.secho(f"error: {_one_line(str(error))}", fg="red", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        report = _write_crash_report()
        typer.secho(
            f"error: unexpected {type(error).__name__}: {_one_line(redact_text(str(error)))[:300]} — a sentiflow bug; "
            f"the traceback is in {report} (the Prefect UI has the run's record)",
            fg="red",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _write_crash_report() -> str:
    """The current exception's traceback (URLs and secrets redacted) in a new file; returns its path."""
    import tempfile
    import traceback

    text = redact_text(traceback.format_exc())
    with tempfile.NamedTemporaryFile("w", prefix="sentiflow-crash-", suffix=".log", delete=False) as handle:
        handle.write(text)
    return handle.name
