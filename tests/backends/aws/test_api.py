"""LambdaHttpApi against moto: function env/role, HTTP API route, integration, CORS, stage, permission."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from backends.aws.api import LambdaHttpApi
from backends.aws.clients import AwsClients
from backends.base import EndpointInfo
from core.config import Settings
from tests.fixtures.moto_world import MotoWorld

pytestmark = pytest.mark.e2e  # the moto server


def endpoint(version: int, name: str = "sentiflow-sentiment") -> EndpointInfo:
    return EndpointInfo(name=name, model_uri="s3://b/m.tar.gz", version=version, status="InService")


def test_point_to_creates_then_updates(aws_settings: Settings, moto_world: MotoWorld) -> None:
    api = LambdaHttpApi(aws_settings, AwsClients(aws_settings))
    assert api.current() is None
    info = api.point_to(endpoint(1), print)
    assert info.url.startswith("https://") and info.url.endswith(".execute-api.us-east-1.amazonaws.com")
    assert info.endpoint_name == "sentiflow-sentiment"

    lam = moto_world.client("lambda")
    function = lam.get_function(FunctionName="sentiflow-predict")
    config = function["Configuration"]
    assert config["Environment"]["Variables"] == {
        "ENDPOINT_NAME": "sentiflow-sentiment",
        "MODEL_VERSION": "1",
    }
    assert config["Role"] == moto_world.lambda_role_arn
    assert config["Handler"] == "lambda_fn.handler.handler" and config["Runtime"].startswith("python3")
    code = lam.get_function(FunctionName="sentiflow-predict")["Code"]
    assert code  # moto stores the zip; check what we built instead
    import tempfile
    from pathlib import Path

    from backends.aws.api import build_zip

    with tempfile.TemporaryDirectory() as tmp:
        data, _, _ = build_zip(Path(tmp))
    assert "lambda_fn/handler.py" in zipfile.ZipFile(io.BytesIO(data)).namelist()

    gateway = moto_world.client("apigatewayv2")
    (http_api,) = gateway.get_apis()["Items"]
    assert http_api["ProtocolType"] == "HTTP" and http_api["ApiEndpoint"] == info.url
    assert http_api["CorsConfiguration"]["AllowMethods"] == ["POST", "OPTIONS"]
    (route,) = gateway.get_routes(ApiId=http_api["ApiId"])["Items"]
    assert route["RouteKey"] == "POST /predict"
    (integration,) = gateway.get_integrations(ApiId=http_api["ApiId"])["Items"]
    assert route["Target"] == f"integrations/{integration['IntegrationId']}"
    assert integration["IntegrationType"] == "AWS_PROXY" and integration["PayloadFormatVersion"] == "2.0"
    assert integration["IntegrationUri"] == config["FunctionArn"]
    (stage,) = gateway.get_stages(ApiId=http_api["ApiId"])["Items"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    policy = json.loads(lam.get_policy(FunctionName="sentiflow-predict")["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(f":{http_api['ApiId']}/*/*/predict")

    # second call: same API, function updated in place, permission not duplicated
    info2 = api.point_to(endpoint(2, "sentiflow-sentiment"), print)
    assert info2.url == info.url
    variables = lam.get_function_configuration(FunctionName="sentiflow-predict")["Environment"]["Variables"]
    assert variables["MODEL_VERSION"] == "2"
    assert len(gateway.get_apis()["Items"]) == 1
    assert len(gateway.get_routes(ApiId=http_api["ApiId"])["Items"]) == 1
    assert len(json.loads(lam.get_policy(FunctionName="sentiflow-predict")["Policy"])["Statement"]) == 1
    current = api.current()
    assert current is not None and current.url == info.url and current.endpoint_name == "sentiflow-sentiment"


def test_missing_lambda_role(aws_settings: Settings, moto_world: MotoWorld) -> None:
    import pytest

    from core.errors import ConfigError

    settings = aws_settings.model_copy(update={"aws_lambda_role_arn": None})
    with pytest.raises(ConfigError, match="SENTIFLOW_AWS_LAMBDA_ROLE_ARN"):
        LambdaHttpApi(settings, AwsClients(settings)).point_to(endpoint(1), print)


def test_the_public_api_is_throttled_bounded_and_answers_only_the_page(
    aws_settings: Settings, moto_world: MotoWorld
) -> None:
    """Issue 15: stage throttling, reserved Lambda concurrency, CORS for the page's origin only (never ``*``)."""
    from backends.aws.api import RESERVED_CONCURRENCY, THROTTLE

    LambdaHttpApi(aws_settings, AwsClients(aws_settings)).point_to(endpoint(1), print)
    gateway = moto_world.client("apigatewayv2")
    (http_api,) = gateway.get_apis()["Items"]
    port = aws_settings.api_port or 8600
    assert http_api["CorsConfiguration"]["AllowOrigins"] == [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    stage = gateway.get_stage(ApiId=http_api["ApiId"], StageName="$default")
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == THROTTLE["ThrottlingBurstLimit"]
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == THROTTLE["ThrottlingRateLimit"]
    concurrency = moto_world.client("lambda").get_function_concurrency(FunctionName="sentiflow-predict")
    assert concurrency["ReservedConcurrentExecutions"] == RESERVED_CONCURRENCY


def test_clear_leaves_the_function_without_an_endpoint(aws_settings: Settings, moto_world: MotoWorld) -> None:
    api = LambdaHttpApi(aws_settings, AwsClients(aws_settings))
    api.clear(print)  # no function yet: nothing to do
    api.point_to(endpoint(2), print)
    api.clear(print)
    variables = moto_world.client("lambda").get_function_configuration(FunctionName="sentiflow-predict")
    assert "ENDPOINT_NAME" not in variables.get("Environment", {}).get("Variables", {})
    assert api.current() is not None and api.current().endpoint_name is None
