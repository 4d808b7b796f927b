"""The Lambda zip: the handler and its modules only, reproducible, importable with boto3 + stdlib alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

from backends.aws.lambda_package import LAMBDA_HANDLER, build_lambda_zip, lambda_sources

ALLOWED_THIRD_PARTY = {"boto3", "botocore", "lambda_fn"}


def test_zip_holds_the_handler_and_nothing_else(tmp_path: Path) -> None:
    path = build_lambda_zip(tmp_path / "lambda.zip")
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    assert "lambda_fn/handler.py" in names and "lambda_fn/__init__.py" in names
    assert names == sorted(f"lambda_fn/{path.name}" for path in lambda_sources())
    assert all(name.startswith("lambda_fn/") and name.endswith(".py") for name in names)
    assert LAMBDA_HANDLER == "lambda_fn.handler.handler"


def test_zip_is_reproducible_and_accepts_a_folder(tmp_path: Path) -> None:
    first = build_lambda_zip(tmp_path / "a.zip")
    (tmp_path / "out").mkdir()
    second = build_lambda_zip(tmp_path / "out")
    assert second == tmp_path / "out" / "lambda.zip"
    assert first.read_bytes() == second.read_bytes()


def test_shipped_modules_import_only_stdlib_and_boto3() -> None:
    for path in lambda_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            foreign = roots - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - {"__future__"}
            assert not foreign, f"{path.name} imports {foreign}; the Lambda runtime only has boto3 + stdlib"


def test_handler_runs_from_the_zip_alone(tmp_path: Path) -> None:
    """Import the handler from the zip in a fresh interpreter that cannot see the project."""
    path = build_lambda_zip(tmp_path / "lambda.zip")
    script = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from lambda_fn.handler import handler;"
        "import lambda_fn.handler as h; assert h.__file__.startswith(sys.argv[1]), h.__file__;"
        "event = {'version': '2.0', 'requestContext': {'http': {'method': 'POST'}}, 'body': 'great'};"
        "r = handler(event, None);"
        "print(r['statusCode'], json.loads(r['body'])['error']);"
        "project = ('sentiflow', 'core', 'backends', 'serve', 'model', 'torch');"
        "assert not any(m.split('.')[0] in project for m in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "503 no model is deployed"
