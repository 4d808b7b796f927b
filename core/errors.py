"""The one exception type that reaches users."""

from __future__ import annotations


class SentiflowError(Exception):
    """A failure the user can act on: the message names the input, what is wrong and the fix.

    The CLI prints it on one line (no traceback); Prefect tasks do not retry it (see ``tasks.policies``).
    """


class DataError(SentiflowError):
    """The dataset or a data file is wrong (hash, layout, content)."""


class ConfigError(SentiflowError):
    """A setting, parameter or hyperparameter is invalid."""


class TransientError(SentiflowError):
    """A fault that may pass by itself (the network, a service briefly away): Prefect retries it, and once the
    retries are spent it reaches the user as one line like any other SentiflowError."""
