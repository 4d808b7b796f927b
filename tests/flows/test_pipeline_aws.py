"""The whole pipeline with ``backend="aws"`` against a moto server on 127.0.0.1 — the same flow code as local.

moto plays the AWS control plane; the moto world (tests/fixtures/aws.py, tests/fixtures/moto_world.py) fills
in what moto does not do by running the real code: ``model/train.py`` for the training job and
``model.inference`` for the batch transform. :func:`play_endpoints` does the same for sagemaker-runtime's
InvokeEndpoint — the functions the PyTorch serving container calls, on the endpoint's model data — so the
serving-parity stage really goes through the endpoint. The test asserts the important fields of every request.
"""

from __future__ import annotations

import base64
import json
import tarfile
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.moto_world import MotoWorld, split_s3
from tests.fixtures.synthetic import write_archive


def play_endpoints(world: MotoWorld, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer InvokeEndpoint with the endpoint's own model (input_fn → predict_fn → output_fn); returns the list
    the names of invoked endpoints are appended to."""
    from moto.sagemakerruntime.models import SageMakerRuntimeBackend
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    from model.inference import input_fn, model_fn, output_fn, predict_fn

    models: dict[str, Any] = {}
    invoked: list[str] = []
    request_path = threading.local()  # moto 5.2 passes EndpointName=None: the name is only in the URL path
    respond = SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint_response(self: Any) -> Any:
        request_path.endpoint = urllib.parse.unquote(self.path.split("/")[2])
        return respond(self)

    def load(endpoint_name: str) -> Any:
        sagemaker = world.sagemaker_backend()
        config = sagemaker.endpoint_configs[sagemaker.endpoints[endpoint_name].endpoint_config_name]
        registered = getattr(sagemaker, "models", None) or sagemaker._models  # moto 5.2 keeps them in _models
        model_data = registered[config.production_variants[0]["ModelName"]].primary_container["ModelDataUrl"]
        if model_data not in models:
            folder = Path(tempfile.mkdtemp(prefix="moto-endpoint-"))
            bucket, key = split_s3(model_data)
            world.client("s3").download_file(bucket, key, str(folder / "model.tar.gz"))
            with tarfile.open(folder / "model.tar.gz") as tar:
                tar.extractall(folder / "model", filter="data")
            models[model_data] = model_fn(str(folder / "model"))
        return models[model_data]

    def invoke_endpoint(self: Any, endpoint_name: str, unique_repr: bytes) -> tuple[str, str, str, str]:
        request = json.loads(base64.b64decode(unique_repr))
        endpoint_name = endpoint_name or request_path.endpoint
        invoked.append(endpoint_name)
        model = load(endpoint_name)
        accept = request.get("Accept") or "application/json"
        out = output_fn(predict_fn(input_fn(request["Body"], "application/json"), model), accept)
        body = out[0] if isinstance(out, tuple) else out  # (body, media type) in the toolkit contract
        return body.decode() if isinstance(body, bytes) else body, accept, "AllTraffic", ""

    monkeypatch.setattr(SageMakerRuntimeBackend, "invoke_endpoint", invoke_endpoint)
    monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint_response)
    return invoked


pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]


def test_pipeline_runs_on_aws(moto_world: MotoWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import pipeline

    environment = {
        "SENTIFLOW_HOME": str(tmp_path / "home"),
        "SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200",
        "SENTIFLOW_VOCAB_SIZE": "60",
        "SENTIFLOW_MAX_LEN": "80",
        "SENTIFLOW_EPOCHS": "3",
        "SENTIFLOW_MIN_ACCURACY": "0.8",
        "SENTIFLOW_PARITY_SAMPLE": "50",
    }
    environment |= {f"SENTIFLOW_{key.upper()}": str(value) for key, value in moto_world.settings_overrides().items()}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    invoked = play_endpoints(moto_world, monkeypatch)
    summary = pipeline(source=str(write_archive(tmp_path, per_class=100)), backend="aws")

    assert summary["backend"] == "aws" and summary["promoted"], summary["gate"]
    assert summary["evaluation"]["model"]["accuracy"] >= 0.8
    endpoint_name = summary["promotion"]["endpoint"]["name"]
    assert summary["parity"]["passed"] and summary["parity"]["checked"] == 50
    assert invoked.count(endpoint_name) == 50  # one InvokeEndpoint per review, through the candidate endpoint
    bucket = moto_world.bucket
    data = summary["data"]
    uris = [data["archive"]["uri"], data["dataset"]["uri"], *data["channels"]["channels"].values()]
    assert all(uri.startswith(f"s3://{bucket}/") for uri in uris), uris  # every stage hand-off is in S3

    sagemaker = moto_world.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=summary["training"]["job_name"])
    image = job["AlgorithmSpecification"]["TrainingImage"]
    assert image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
    assert job["RoleArn"] == moto_world.role_arn
    assert json.loads(job["HyperParameters"]["sagemaker_program"]) == "model/train.py"
    assert job["HyperParameters"]["epochs"] == "3"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert set(channels) == {"train", "validation"} and channels["train"].startswith(f"s3://{bucket}/")
    # moto replaces MetricDefinitions with its own in DescribeTrainingJob: tests/backends/aws checks the request
    job_tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert job_tags["project"] == "sentiflow"

    endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    assert endpoint["EndpointStatus"] == "InService"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.5-cpu-py311")
    assert variant["InstanceType"] == "ml.m5.large"
    endpoint_tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]}
    assert endpoint_tags["sentiflow:managed"] == "true"

    function = moto_world.client("lambda").get_function_configuration(FunctionName="sentiflow-predict")
    assert function["Environment"]["Variables"]["ENDPOINT_NAME"] == endpoint_name
    assert function["Handler"] == "lambda_fn.handler.handler"
    gateway = moto_world.client("apigatewayv2")
    api = next(a for a in gateway.get_apis()["Items"] if a["ApiEndpoint"] == summary["promotion"]["api"]["url"])
    assert {r["RouteKey"] for r in gateway.get_routes(ApiId=api["ApiId"])["Items"]} >= {"POST /predict"}
    assert "$default" in {s["StageName"] for s in gateway.get_stages(ApiId=api["ApiId"])["Items"]}
