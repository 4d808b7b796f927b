"""What the Lambda runtime does inside one execution environment — for the local gateway's worker processes.

Each worker process of :mod:`serve.gateway`'s pool is one execution environment. :func:`init` is its init phase: the
process environment becomes the function's configuration (nothing of the gateway's own ``AWS_*`` settings or proxies
leaks in), then the handler module is imported, so its module-level code (the boto3 client, the variables it reads)
runs once with that configuration — as on Lambda, where a configuration change means new environments. :func:`invoke`
is one invocation: the event and a context object in, the handler's return value out.

Kept free of the gateway's web stack so a new environment starts quickly; it imports nothing of the project but the
handler.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

FUNCTION_NAME = "sentiflow-api-local"
HANDLER = "lambda_fn.handler.handler"
TIMEOUT_S = 30  # the function's timeout; API Gateway's integration timeout is 30 s too
MEMORY_MB = 256

_handler: Any = None


class LambdaContext:
    """The parts of the Lambda context object handlers use."""

    function_name = FUNCTION_NAME
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION_NAME}"
    memory_limit_in_mb = MEMORY_MB
    log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name = "local"

    def __init__(self, aws_request_id: str, timeout_s: float = TIMEOUT_S) -> None:
        self.aws_request_id = aws_request_id
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_environment(configuration: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment of an execution environment: ``base`` (default: this process's) without AWS settings,
    profiles or proxies, plus what the Lambda runtime sets, plus the function's ``configuration``."""
    base = os.environ if base is None else base
    dropped = ("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    kept = {key: value for key, value in base.items() if not key.upper().startswith(dropped)}
    runtime = {
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
        "AWS_CONFIG_FILE": os.devnull,  # the user's ~/.aws profiles are not the function's
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return {**kept, **runtime, **configuration}


def init(environment: Mapping[str, str], handler: str = HANDLER) -> None:
    """The init phase: set the environment, route log records to stderr like the runtime does, import the handler."""
    os.environ.clear()
    os.environ.update(environment)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logging.getLogger().handlers[:] = [stream]
    module, _, name = handler.rpartition(".")
    global _handler
    _handler = getattr(importlib.import_module(module), name)


def invoke(event: dict[str, Any], request_id: str, timeout_s: float = TIMEOUT_S) -> Any:
    """One invocation in this environment."""
    return _handler(event, LambdaContext(request_id, timeout_s))


def ready(pause_s: float = 0.05) -> int:
    """A no-op invocation (it holds its process a moment so a batch of them reaches every process of the pool)."""
    time.sleep(pause_s)
    return os.getpid()
