"""The whole pipeline on the local backend, end to end: synthetic IMDB-shaped data → trained model → endpoint →
API → web page in a real browser → blue/green redeploy → teardown. Real Prefect, real processes, no doubles."""

from __future__ import annotations

import json
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import DataError
from tests.fixtures.synthetic import write_archive

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]

SMALL = {
    "SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200",
    "SENTIFLOW_VOCAB_SIZE": "60",
    "SENTIFLOW_MAX_LEN": "80",
    "SENTIFLOW_EPOCHS": "2",
    "SENTIFLOW_MIN_ACCURACY": "0.8",
    "SENTIFLOW_PARITY_SAMPLE": "100",
}


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A SENTIFLOW_HOME for the module, with small-data settings; stops every process the pipeline started."""
    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENTIFLOW_HOME", str(root / "home"))
        patch.setenv("SENTIFLOW_API_PORT", "0")
        for key, value in SMALL.items():
            patch.setenv(key, value)
        settings = Settings()
        yield settings
        from backends.local.api import LocalApiGateway
        from backends.local.endpoints import LocalEndpointManager

        endpoints = LocalEndpointManager(settings)
        for endpoint in endpoints.list():
            endpoints.delete(endpoint.name)
        LocalApiGateway(settings).stop()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("data"), per_class=100)


@pytest.fixture(scope="module")
def first_run(home: Settings, archive: Path) -> dict[str, Any]:
    from flows.pipeline import pipeline

    return pipeline(source=str(archive))


def test_first_run_trains_evaluates_and_promotes(first_run: dict[str, Any]) -> None:
    assert first_run["data"]["channels"]["counts"] == {"train": 180, "validation": 20, "test": 200}
    assert first_run["evaluation"]["model"]["accuracy"] >= 0.8
    assert first_run["parity"]["passed"] and first_run["parity"]["mismatched"] == 0
    assert first_run["promoted"] and first_run["promotion"]["version"] == 1
    assert first_run["promotion"]["api"]["url"].startswith("http://127.0.0.1:")


def test_api_answers_with_the_trained_model(first_run: dict[str, Any]) -> None:
    api = first_run["promotion"]["api"]["url"].rstrip("/")
    status, positive = post(f"{api}/predict", {"review": "a great wonderful film, excellent and brilliant"})
    assert status == 200 and positive["label"] == "positive" and positive["model_version"] == "1"
    status, negative = post(f"{api}/predict", {"review": "an awful terrible film, boring and the worst"})
    assert status == 200 and negative["label"] == "negative"
    status, error = post(f"{api}/predict", {"review": "   "})
    assert status == 400 and "empty" in error["message"]


def test_page_in_a_real_browser(first_run: dict[str, Any], browser: Any) -> None:
    page_url = first_run["promotion"]["api"]["page_url"] or first_run["promotion"]["api"]["url"]
    context = browser.new_context()
    page = context.new_page()
    page.goto(page_url)
    for review, label in (
        ("great wonderful brilliant masterpiece", "Positive"),
        ("awful boring worst", "Negative"),
    ):
        page.fill("#review", review)
        page.click("#submit")
        page.wait_for_function(f"() => document.querySelector('#result-label')?.textContent === '{label}'")
        assert page.text_content("#result-version") == "1"
    context.close()


def test_a_new_model_is_deployed_blue_green(home: Settings, archive: Path, first_run) -> None:
    from flows.pipeline import pipeline

    second = pipeline(source=str(archive), epochs=3)
    assert second["data"]["channels"]["key"] == first_run["data"]["channels"]["key"]
    assert second["training"]["job_name"] != first_run["training"]["job_name"]
    assert second["promoted"] and second["promotion"]["version"] == 2
    assert first_run["promotion"]["endpoint"]["name"] in second["promotion"]["replaced"]
    api = second["promotion"]["api"]["url"].rstrip("/")
    status, answer = post(f"{api}/predict", {"review": "great film"})
    assert status == 200 and answer["model_version"] == "2"


def test_quality_gate_keeps_the_deployed_model(home: Settings, tmp_path: Path, first_run) -> None:
    from backends.local.api import LocalApiGateway
    from flows.pipeline import pipeline

    before = LocalApiGateway(home).current()
    coin_flips = write_archive(tmp_path, per_class=100, name="coin-flips.tar.gz", unlearnable=True)
    result = pipeline(source=str(coin_flips), epochs=1)
    assert result["evaluation"]["model"]["accuracy"] < 0.8
    assert not result["promoted"] and "min_accuracy" in result["gate"]["reason"]
    assert LocalApiGateway(home).current() == before


def test_a_broken_dataset_stops_the_flow_with_every_failure_named(home: Settings, tmp_path: Path) -> None:
    from flows.pipeline import data_flow

    archive = write_archive(tmp_path / "broken", per_class=100, name="broken.tar.gz")
    broken = tmp_path / "one-class.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(broken, "w:gz") as target:
        for member in source:
            if "/test/neg/" not in member.name:
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    with pytest.raises(DataError) as caught:
        data_flow(source=str(broken))
    message = str(caught.value)
    assert "rows per split (test)" in message and "labels balanced (test)" in message
