"""Idle-endpoint teardown: real endpoints go away, dry runs touch nothing, the API then answers 503."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import pytest

from backends.base import Backend, EndpointInfo, TeardownDecision
from core.config import Settings
from core.events import resource_id
from core.processes import pid_alive
from tasks.deploy import blue_green_deploy
from tasks.teardown import TeardownReport, run_teardown, teardown
from tests.fixtures.tiny_model import TinyModel

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def port_open(url: str) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", urlparse(url).port)) == 0


def predict(api_url: str) -> tuple[int, dict]:
    response = httpx.post(f"{api_url}/predict", json={"review": "a wonderful film"}, timeout=30)
    return response.status_code, response.json()


def decision(name: str, **extra: object) -> TeardownDecision:
    info = EndpointInfo(name=name, model_uri="file:///m.tar.gz", version=4, status="InService", extra=dict(extra))
    return TeardownDecision(endpoint=info, reason="idle", idle_minutes=75.0, age_hours=3.5, saved="1 process")


def test_dry_run_report_and_savings(settings: Settings) -> None:
    lines: list[str] = []
    backend = Backend("local", None, None, None, None, None)  # type: ignore[arg-type] - a dry run only reports
    report = teardown(
        settings,
        [
            decision("ep-a", rss_bytes=300 << 20, processes=1),
            decision("ep-b", rss_bytes=100 << 20, processes=1),
        ],
        True,
        lines.append,
        idle_minutes=60,
        backend=backend,
    )
    assert report.dry_run and report.deleted == [] and not report.api_cleared
    assert report.savings() == "2 process(es), 400 MiB RSS"
    assert report.summary().startswith("teardown (local): would delete ep-a, ep-b; saves 2 process(es)")
    assert [row["action"] for row in report.rows()] == ["would delete", "would delete"]
    assert "| ep-a | 4 | idle | 75.0 | 3.5 | 1 process | would delete |" in report.markdown()
    assert any("dry run: would delete ep-a" in line for line in lines)
    assert json.loads(json.dumps(report.to_dict()))["savings"] == report.savings()


def test_aws_savings_come_from_the_price_table(settings: Settings) -> None:
    info = EndpointInfo(
        name="sentiflow-v2-abcdef",
        model_uri="s3://bucket/model.tar.gz",
        version=2,
        status="InService",
        instance_type="ml.m5.large",
        extra={"variants": [{"name": "AllTraffic", "instances": 2}]},
    )
    backend = Backend("aws", None, None, None, None, None)  # type: ignore[arg-type]
    chosen = TeardownDecision(info, "max-age", None, 30.0, "2 x ml.m5.large")
    report = teardown(settings, [chosen], True, print, backend=backend)
    assert report.items[0].usd_per_hour == pytest.approx(0.23)
    assert "$0.230/hour ($5.52/day" in report.savings()


def test_nothing_idle_says_so(settings: Settings) -> None:
    report = TeardownReport(backend="local", dry_run=False, idle_minutes=60, max_age_hours=None)
    assert report.summary() == "teardown: no endpoint is idle (idle ≥ 60 min); nothing to do"
    assert report.savings() == "nothing" and "| endpoint |" not in report.markdown()


@pytest.mark.e2e
def test_idle_endpoint_is_deleted_and_the_api_answers_503(
    settings: Settings, local: Backend, tiny_model: TinyModel
) -> None:
    uri, _ = local.store.put_file(tiny_model.tar_path, "jobs/one/model.tar.gz")
    promotion = blue_green_deploy(settings, uri, print, backend=local)
    endpoint, api_url = promotion.endpoint, promotion.api.url
    assert predict(api_url)[0] == 200

    busy = run_teardown(settings, print, idle_minutes=60, backend=local)  # just invoked: not idle
    assert busy.items == [] and pid_alive(endpoint.extra["pid"])

    dry = run_teardown(settings, print, idle_minutes=0, dry_run=True, backend=local)
    assert [item.name for item in dry.items] == [endpoint.name] and dry.deleted == []
    assert pid_alive(endpoint.extra["pid"]) and port_open(endpoint.url)
    assert predict(api_url)[0] == 200

    other = run_teardown(settings, print, idle_minutes=0, endpoint="sentiflow.endpoint.someone-else", backend=local)
    assert other.items == [] and pid_alive(endpoint.extra["pid"])

    report = run_teardown(settings, print, idle_minutes=0, endpoint=resource_id(endpoint.name), backend=local)

    assert report.deleted == [endpoint.name] and report.api_cleared
    assert report.items[0].processes == 1 and report.items[0].rss_bytes > 0
    assert "MiB RSS" in report.savings() and "503" in report.summary()
    assert not pid_alive(endpoint.extra["pid"]) and not port_open(endpoint.url)
    assert local.endpoints.list() == []
    status, body = predict(api_url)
    assert status == 503 and body["error"] == "no model is deployed"
    assert local.store.exists("jobs/one/model.tar.gz")  # the model stays: a redeploy is one command


def _cli_ready() -> bool:
    return importlib.util.find_spec("backends.local.training") is not None


@pytest.mark.e2e
@pytest.mark.skipif(not _cli_ready(), reason="get_backend needs backends/local/training.py (lead)")
def test_cli_list_dry_run_and_teardown(settings: Settings, local: Backend, tiny_model: TinyModel) -> None:
    promotion = blue_green_deploy(settings, str(tiny_model.model_dir), print, backend=local)
    env = {**os.environ, "SENTIFLOW_HOME": str(settings.home), "SENTIFLOW_API_PORT": "0"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from sentiflow.cli import main; main()", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)

    listed = cli("endpoints", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["name"] == promotion.endpoint.name and row["live"] and row["status"] == "InService"
    table = cli("endpoints", "list")
    assert f"* {promotion.endpoint.name}" in table.stdout and "InService" in table.stdout

    dry = cli("teardown", "--idle-minutes", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout and pid_alive(promotion.endpoint.extra["pid"])

    done = cli("teardown", "--idle-minutes", "0")
    assert done.returncode == 0, done.stderr
    assert f"deleted {promotion.endpoint.name}" in done.stdout and "503" in done.stdout
    assert not pid_alive(promotion.endpoint.extra["pid"])

    missing = cli("endpoints", "delete", promotion.endpoint.name)
    assert missing.returncode == 2 and "no endpoint named" in missing.stderr
    assert "Traceback" not in missing.stderr
