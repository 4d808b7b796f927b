"""The whole pipeline on the local backend, end to end: synthetic IMDB-shaped data → trained model → candidate
endpoint → serving parity through it → API → web page in a real browser → reruns served from Prefect's cache →
blue/green redeploy → a failed parity check. Real Prefect, real processes; the stage states are read back from
the Prefect API."""

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
from core.errors import DataError, SentiflowError
from tests.fixtures.prefect_helpers import task_runs_of
from tests.fixtures.synthetic import write_archive

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]

SMALL = {
    "SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200",
    "SENTIFLOW_VOCAB_SIZE": "60",
    "SENTIFLOW_MAX_LEN": "80",
    "SENTIFLOW_EPOCHS": "2",
    "SENTIFLOW_MIN_ACCURACY": "0.8",
    "SENTIFLOW_MAX_REGRESSION": "1",  # later runs here are judged on min_accuracy alone
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


DATA_STAGES = ("download", "load-dataset", "validate-dataset", "prepare-channels")


def run(flow: Any, **parameters: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Run ``flow``; returns its result and the final state of each of its stages as the Prefect API has them."""
    state = flow(**parameters, return_state=True)
    states = {t.name.rsplit("-", 1)[0]: t.state.name for t in task_runs_of(state.state_details.flow_run_id)}
    return state.result(), states


def live_endpoints(settings: Settings) -> set[str]:
    from backends.local.endpoints import LocalEndpointManager

    return {e.name for e in LocalEndpointManager(settings).list() if e.status == "InService"}


@pytest.fixture(scope="module")
def first_run(home: Settings, archive: Path) -> dict[str, Any]:
    from flows.pipeline import pipeline

    return pipeline(source=str(archive))


def test_first_run_trains_evaluates_and_promotes(first_run: dict[str, Any]) -> None:
    assert first_run["data"]["channels"]["counts"] == {"train": 180, "validation": 20, "test": 200}
    assert first_run["evaluation"]["model"]["accuracy"] >= 0.8
    assert first_run["promoted"] and first_run["promotion"]["version"] == 1
    assert first_run["promotion"]["api"]["url"].startswith("http://127.0.0.1:")
    assert not any(first_run["reused"].values()), first_run["reused"]
    # parity was checked through the candidate endpoint itself, before the API was pointed at it
    parity = first_run["parity"]
    assert parity["passed"] and parity["mismatched"] == 0 and parity["checked"] == 100
    assert all(
        uri.startswith("file://") and "/store/" in uri for uri in first_run["data"]["channels"]["channels"].values()
    )


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


def test_a_rerun_with_nothing_changed_reuses_every_stage_and_deploys_nothing(
    home: Settings, archive: Path, first_run: dict[str, Any]
) -> None:
    from flows.pipeline import pipeline

    before = live_endpoints(home)
    summary, states = run(pipeline, source=str(archive))
    cached = [*DATA_STAGES, "train-model", "batch-transform", "evaluate"]
    assert {stage: states[stage] for stage in cached} == dict.fromkeys(cached, "Cached")
    assert summary["promotion"]["reused"] and summary["promotion"]["version"] == 1 and summary["parity"] is None
    assert "deploy-endpoint" not in states and live_endpoints(home) == before  # the same model already serves


def test_changing_epochs_reuses_the_data_stages_and_deploys_blue_green(
    home: Settings, archive: Path, first_run: dict[str, Any]
) -> None:
    from flows.pipeline import pipeline

    second, states = run(pipeline, source=str(archive), epochs=3)
    assert {stage: states[stage] for stage in DATA_STAGES} == dict.fromkeys(DATA_STAGES, "Cached")
    assert states["train-model"] == "Completed" and states["deploy-endpoint"] == "Completed"
    assert second["data"]["channels"]["key"] == first_run["data"]["channels"]["key"]
    assert second["training"]["job_name"] != first_run["training"]["job_name"]
    assert second["promoted"] and second["promotion"]["version"] == 2 and second["parity"]["passed"]
    assert first_run["promotion"]["endpoint"]["name"] in second["promotion"]["replaced"]
    api = second["promotion"]["api"]["url"].rstrip("/")
    status, answer = post(f"{api}/predict", {"review": "great film"})
    assert status == 200 and answer["model_version"] == "2"


def test_changing_the_vocabulary_size_reruns_preprocessing(home: Settings, archive: Path, first_run) -> None:
    from flows.pipeline import data_flow

    data, states = run(data_flow, source=str(archive), vocab_size=61)
    assert states["prepare-channels"] == "Completed"  # not Cached: its input changed
    assert {stage: states[stage] for stage in DATA_STAGES[:3]} == dict.fromkeys(DATA_STAGES[:3], "Cached")
    assert data["channels"]["key"] != first_run["data"]["channels"]["key"]


def test_a_cached_result_whose_files_are_gone_is_computed_again(home: Settings, archive: Path, first_run) -> None:
    """Someone deleted the channels from the store: the cache still names them, so the stage runs again instead of
    handing a dangling URI to training."""
    import shutil

    from backends.local.storage import LocalArtifactStore
    from flows.pipeline import data_flow

    store = LocalArtifactStore(home.store_dir)
    channels = first_run["data"]["channels"]
    shutil.rmtree(store.path(f"channels/{channels['key']}"))
    data, states = run(data_flow, source=str(archive))
    assert states["prepare-channels"] == "Completed" and data["channels"]["key"] == channels["key"]
    assert all(store.exists(store.key_from_uri(uri)) for uri in data["channels"]["channels"].values())


def test_a_failed_parity_check_deletes_the_candidate_and_keeps_the_api(
    home: Settings, archive: Path, first_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint answers differently from the batch transform (a serving skew): the candidate goes, the
    endpoint behind the API keeps serving."""
    import tasks.parity
    from backends.local.api import LocalApiGateway
    from flows.pipeline import pipeline

    real = tasks.parity.endpoint_answers

    def skewed(endpoints: Any, name: str, reviews: Any) -> list[dict[str, Any]]:
        return [{**answer, "score": 1.0 - answer["score"]} for answer in real(endpoints, name, reviews)]

    monkeypatch.setattr(tasks.parity, "endpoint_answers", skewed)
    serving_before = LocalApiGateway(home).current()
    live_before = live_endpoints(home)
    with pytest.raises(SentiflowError, match="failed the parity check and was deleted"):
        pipeline(source=str(archive), epochs=2)  # the first run's model: cached, not the one behind the API
    assert LocalApiGateway(home).current() == serving_before and live_endpoints(home) == live_before
    from backends.base import get_registry

    models = {m.model_uri: m for m in get_registry(home).list()}
    candidate = models[first_run["training"]["model_uri"]]  # redeployed, failed parity: Rejected, not live
    assert (candidate.status, candidate.live) == ("Rejected", False) and "parity" in (candidate.reason or "")
    assert [m.live for m in models.values()].count(True) == 1


def test_quality_gate_keeps_the_deployed_model(home: Settings, tmp_path: Path, first_run) -> None:
    from backends.local.api import LocalApiGateway
    from flows.pipeline import pipeline

    before = LocalApiGateway(home).current()
    coin_flips = write_archive(tmp_path, per_class=100, name="coin-flips.tar.gz", unlearnable=True)
    result = pipeline(source=str(coin_flips), epochs=1)
    assert result["evaluation"]["model"]["accuracy"] < 0.8
    assert not result["promoted"] and "min_accuracy" in result["gate"]["reason"]
    assert LocalApiGateway(home).current() == before
    from backends.base import get_registry

    registry = get_registry(home)
    rejected = registry.get(result["model"]["version"])
    assert rejected.status == "Rejected" and rejected.reason.startswith("quality gate: accuracy")
    assert rejected.metrics_uri == result["evaluation"]["uri"] and rejected.tags["run-id"]
    assert registry.live().version == result["deployed_model"]["version"] != rejected.version


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
