"""pytest plugin: record every AWS call the code under test makes, with who makes it, into an inventory file.

    POLICY_INVENTORY=out.jsonl PROJECT_ROOT=/path/to/sentiflow \
        pytest -p recorder tests/backends/aws          (with this folder on PYTHONPATH)

Who makes a call is decided when the boto3 client is *created*, from the creating stack's first frame inside the
project: ``tests/`` -> ``fixture`` (setup and assertions; not checked), ``lambda_fn/`` -> ``lambda-predict``,
anything else (backends/, tasks/, sentiflow/, flows/) -> ``operator``. A client created by the moto world's
job players (they stand in for SageMaker) is the ``sagemaker-execution`` principal for S3 and Logs.
Every API call (``BaseClient._make_api_call``: plain calls, paginators, waiters, s3transfer) is recorded with
its parameters (bytes shortened) and the few response fields the mapping needs (ids and tags).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

ACCOUNT = os.environ.get("POLICY_ACCOUNT", "123456789012")
ROOT = Path(os.environ.get("PROJECT_ROOT", os.getcwd())).resolve()
_state = threading.local()
RECORDS: list[dict[str, Any]] = []
_current_test = {"id": ""}
KEEP = {
    ("apigatewayv2", "CreateApi"): ("ApiId", "ApiEndpoint"),
    ("apigatewayv2", "GetApis"): ("Items",),
    ("sagemaker", "ListTags"): ("Tags",),
    ("lambda", "GetFunction"): ("Tags",),
}


def _safe(value: Any, depth: int = 0) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v, depth + 1) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return f"<{type(value).__name__}>"


def _principal_from_stack() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        try:
            path = Path(frame.f_code.co_filename).resolve()
        except OSError:
            path = Path(frame.f_code.co_filename)
        if ROOT in path.parents and "site-packages" not in path.parts:
            relative = path.relative_to(ROOT).parts
            if relative[0] == "tests":
                if getattr(_state, "player", False):
                    return "player"
                return "fixture"
            if relative[0] == "lambda_fn":
                return "lambda-predict"
            return "operator"
        frame = frame.f_back
    return "unattributed"


def install() -> None:
    import botocore.session
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    original_create = botocore.session.Session.create_client
    original_call = BaseClient._make_api_call

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original_create(self, *args, **kwargs)
        client._sentiflow_principal = _principal_from_stack()
        return client

    def make_api_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        principal = _principal_from_stack()  # who calls now (a test calling through AwsClients is a fixture)
        if principal == "unattributed":  # e.g. s3transfer worker threads: who created the client
            principal = getattr(self, "_sentiflow_principal", "unattributed")
        if principal == "player":
            principal = "sagemaker-execution" if service in ("s3", "logs") else "fixture"
        entry: dict[str, Any] = {
            "test": _current_test["id"],
            "principal": principal,
            "service": service,
            "operation": operation_name,
            "params": _safe(api_params),
            "region": self.meta.region_name,
            "account": ACCOUNT,
            "response": None,
            "error": None,
        }
        try:
            response = original_call(self, operation_name, api_params)
            keep = KEEP.get((service, operation_name), ())
            entry["response"] = _safe({k: response[k] for k in keep if k in response})
            return response
        except ClientError as error:
            entry["error"] = error.response.get("Error", {}).get("Code", "ClientError")
            raise
        finally:
            RECORDS.append(entry)

    botocore.session.Session.create_client = create_client
    BaseClient._make_api_call = make_api_call


def _mark_players() -> None:
    """Job players run in threads started by MotoWorld._spawn: mark those threads."""
    try:
        from tests.fixtures import moto_world
    except ImportError:
        return
    original = moto_world.MotoWorld._spawn

    def spawn(self: Any, target: Any, job: Any) -> None:
        def as_player(job: Any) -> None:
            _state.player = True
            target(job)

        original(self, as_player, job)

    moto_world.MotoWorld._spawn = spawn


def pytest_configure(config: Any) -> None:
    install()


def pytest_collection_finish(session: Any) -> None:
    _mark_players()


def pytest_runtest_setup(item: Any) -> None:
    _current_test["id"] = item.nodeid


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get("POLICY_INVENTORY")
    if path:
        with open(path, "w") as handle:
            for entry in RECORDS:
                handle.write(json.dumps(entry) + "\n")
