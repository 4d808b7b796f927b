"""The public API on AWS: a Lambda (``lambda_fn``) behind an HTTP API (API Gateway v2) with ``POST /predict``.

``point_to(endpoint)`` is idempotent: it creates or updates the function (code,
``ENDPOINT_NAME``/``MODEL_VERSION`` environment), the HTTP API (CORS, AWS_PROXY integration with payload
format 2.0, the route, a ``$default`` auto-deploy stage) and the permission that lets API Gateway invoke the
function.

The API is public (no authorizer: see docs/aws.md for adding one), so it is bounded instead: the stage is
throttled (:data:`THROTTLE`), the function's concurrency is reserved (:data:`RESERVED_CONCURRENCY`, which also caps
what a flood can cost in endpoint load), and CORS allows only the page's origin (:func:`cors_for`: the local
gateway's page, ``http://127.0.0.1:<SENTIFLOW_API_PORT>`` and ``http://localhost:<port>``), never ``*``.

Plain boto3: the SageMaker SDK has nothing for Lambda or API Gateway, and prefect-aws's ``LambdaFunction`` block
only invokes functions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors, error_code
from backends.aws.lambda_package import LAMBDA_HANDLER, LAMBDA_RUNTIME, build_lambda_zip
from backends.base import ApiInfo, EndpointInfo, LogLine
from core.errors import ConfigError

if TYPE_CHECKING:
    from core.config import Settings

ROUTE_KEY = "POST /predict"
STAGE = "$default"
PERMISSION_SID = "sentiflow-apigateway-invoke"
TIMEOUT_S = 30  # HTTP APIs give up after 30 s
MEMORY_MB = 256
INTEGRATION_TIMEOUT_MS = 29_000
THROTTLE = {"ThrottlingBurstLimit": 20, "ThrottlingRateLimit": 10.0}
"""Default route settings of the stage: requests per second (steady) and burst, over all clients."""
RESERVED_CONCURRENCY = 5
"""Concurrent executions reserved for (and the most allowed to) the API function."""
DEFAULT_PAGE_PORT = 8600


def cors_for(settings: Settings) -> dict[str, Any]:
    """CORS of the HTTP API: the page's origins only (the local gateway serves the page)."""
    port = settings.api_port or DEFAULT_PAGE_PORT
    return {
        "AllowOrigins": [f"http://127.0.0.1:{port}", f"http://localhost:{port}"],
        "AllowMethods": ["POST", "OPTIONS"],
        "AllowHeaders": ["content-type"],
        "MaxAge": 3600,
    }


def build_zip(folder: Path) -> tuple[bytes, str, str]:
    """(zip bytes, handler, runtime) of the API Lambda (``backends.aws.lambda_package``)."""
    path = build_lambda_zip(folder / "lambda.zip")
    return Path(path).read_bytes(), LAMBDA_HANDLER, LAMBDA_RUNTIME


class LambdaHttpApi:
    """``ApiGateway`` on AWS Lambda + API Gateway HTTP API."""

    def __init__(self, settings: Settings, clients: AwsClients) -> None:
        self.settings = settings
        self.clients = clients
        self.function_name = f"{settings.aws_prefix}-predict"
        self.api_name = f"{settings.aws_prefix}-api"

    @property
    def tags(self) -> dict[str, str]:
        return {"project": "sentiflow", "sentiflow:managed": "true"}

    # --- lambda ---------------------------------------------------------------------------------------------
    def _function(self, endpoint: EndpointInfo, log: LogLine) -> str:
        """Create or update the function; its ARN."""
        from botocore.exceptions import ClientError

        role = self.settings.aws_lambda_role_arn
        if not role:
            raise ConfigError(
                "the API Lambda needs an execution role: set SENTIFLOW_AWS_LAMBDA_ROLE_ARN "
                "(policy: deployments/iam/lambda-predict-role.json, see docs/aws.md)"
            )
        lam = self.clients.client("lambda")
        environment = {"Variables": {"ENDPOINT_NAME": endpoint.name, "MODEL_VERSION": str(endpoint.version)}}
        with tempfile.TemporaryDirectory(prefix="sentiflow-lambda-") as tmp:
            code, handler, runtime = build_zip(Path(tmp))
        try:
            current = lam.get_function_configuration(FunctionName=self.function_name)
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            current = None
        if current is None:
            created = lam.create_function(
                FunctionName=self.function_name,
                Runtime=runtime,
                Role=role,
                Handler=handler,
                Code={"ZipFile": code},
                Description="sentiflow: POST /predict -> SageMaker endpoint",
                Timeout=TIMEOUT_S,
                MemorySize=MEMORY_MB,
                Environment=environment,
                Tags=self.tags,
            )
            lam.get_waiter("function_active_v2").wait(FunctionName=self.function_name)
            lam.put_function_concurrency(
                FunctionName=self.function_name, ReservedConcurrentExecutions=RESERVED_CONCURRENCY
            )
            log(f"lambda {self.function_name} created -> endpoint {endpoint.name}")
            return created["FunctionArn"]
        lam.update_function_code(FunctionName=self.function_name, ZipFile=code)
        lam.get_waiter("function_updated_v2").wait(FunctionName=self.function_name)
        updated = lam.update_function_configuration(
            FunctionName=self.function_name,
            Role=role,
            Handler=handler,
            Runtime=runtime,
            Timeout=TIMEOUT_S,
            MemorySize=MEMORY_MB,
            Environment=environment,
        )
        lam.get_waiter("function_updated_v2").wait(FunctionName=self.function_name)
        lam.put_function_concurrency(FunctionName=self.function_name, ReservedConcurrentExecutions=RESERVED_CONCURRENCY)
        log(f"lambda {self.function_name} updated -> endpoint {endpoint.name} v{endpoint.version}")
        return updated["FunctionArn"]

    def _permission(self, function_arn: str, api_id: str) -> None:
        """Let this API (any stage, ``POST /predict``) invoke the function; idempotent."""
        from botocore.exceptions import ClientError

        lam = self.clients.client("lambda")
        account = self.clients.account_id_from_arn(function_arn)
        source_arn = f"arn:aws:execute-api:{self.clients.region}:{account}:{api_id}/*/*/predict"
        try:
            policy = json.loads(lam.get_policy(FunctionName=self.function_name)["Policy"])
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            policy = {"Statement": []}
        for statement in policy.get("Statement", []):
            if statement.get("Sid") == PERMISSION_SID:
                arn = statement.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
                if arn == source_arn:
                    return
                lam.remove_permission(FunctionName=self.function_name, StatementId=PERMISSION_SID)
        try:
            lam.add_permission(
                FunctionName=self.function_name,
                StatementId=PERMISSION_SID,
                Action="lambda:InvokeFunction",
                Principal="apigateway.amazonaws.com",
                SourceArn=source_arn,
            )
        except ClientError as error:
            if error_code(error) != "ResourceConflictException":
                raise

    # --- http api ---------------------------------------------------------------------------------------
    def _find_api(self) -> dict[str, Any] | None:
        gateway = self.clients.client("apigatewayv2")
        kwargs: dict[str, Any] = {}
        while True:
            page = gateway.get_apis(**kwargs)
            for api in page.get("Items", []):
                if api.get("Name") == self.api_name and api.get("Tags", {}).get("sentiflow:managed") == "true":
                    return api
            if not page.get("NextToken"):
                return None
            kwargs["NextToken"] = page["NextToken"]

    def _api(self, function_arn: str, log: LogLine) -> dict[str, Any]:
        gateway = self.clients.client("apigatewayv2")
        cors = cors_for(self.settings)
        api = self._find_api()
        if api is None:
            api = gateway.create_api(
                Name=self.api_name,
                ProtocolType="HTTP",
                Description="sentiflow sentiment API",
                CorsConfiguration=cors,
                Tags=self.tags,
            )
            log(f"HTTP API {self.api_name} created ({api['ApiEndpoint']})")
        elif api.get("CorsConfiguration") != cors:
            gateway.update_api(ApiId=api["ApiId"], CorsConfiguration=cors)
        api_id = api["ApiId"]
        integration_id = None
        for item in gateway.get_integrations(ApiId=api_id).get("Items", []):
            if item.get("IntegrationType") == "AWS_PROXY" and item.get("IntegrationUri") == function_arn:
                integration_id = item["IntegrationId"]
        if integration_id is None:
            integration_id = gateway.create_integration(
                ApiId=api_id,
                IntegrationType="AWS_PROXY",
                IntegrationUri=function_arn,
                IntegrationMethod="POST",
                PayloadFormatVersion="2.0",
                TimeoutInMillis=INTEGRATION_TIMEOUT_MS,
            )["IntegrationId"]
        target = f"integrations/{integration_id}"
        route = next((r for r in gateway.get_routes(ApiId=api_id).get("Items", []) if r["RouteKey"] == ROUTE_KEY), None)
        if route is None:
            gateway.create_route(ApiId=api_id, RouteKey=ROUTE_KEY, Target=target)
        elif route.get("Target") != target:
            gateway.update_route(ApiId=api_id, RouteId=route["RouteId"], Target=target)
        stage = next(
            (s for s in gateway.get_stages(ApiId=api_id).get("Items", []) if s.get("StageName") == STAGE), None
        )
        if stage is None:
            gateway.create_stage(
                ApiId=api_id, StageName=STAGE, AutoDeploy=True, DefaultRouteSettings=THROTTLE, Tags=self.tags
            )
        elif not _throttled(stage):
            gateway.update_stage(ApiId=api_id, StageName=STAGE, DefaultRouteSettings=THROTTLE)
        return api

    # --- interface ----------------------------------------------------------------------------------------
    def point_to(self, endpoint: EndpointInfo, log: LogLine) -> ApiInfo:
        with aws_errors(f"pointing the API at endpoint {endpoint.name}", "see docs/aws.md for the operator policy"):
            function_arn = self._function(endpoint, log)
            api = self._api(function_arn, log)
            self._permission(function_arn, api["ApiId"])
        url = api["ApiEndpoint"]
        log(f"API ready: POST {url}/predict -> {self.function_name} -> {endpoint.name}")
        return ApiInfo(url=url, page_url=None, endpoint_name=endpoint.name)

    def clear(self, log: LogLine) -> None:
        """Stop routing to any endpoint: the function loses ``ENDPOINT_NAME`` and answers 503 "no model is
        deployed" (before its endpoint is deleted, so it never calls a dying one). No function: nothing to do."""
        from botocore.exceptions import ClientError

        lam = self.clients.client("lambda")
        with aws_errors("clearing the API's endpoint", "see docs/aws.md for the operator policy"):
            try:
                config = lam.get_function_configuration(FunctionName=self.function_name)
            except ClientError as error:
                if error_code(error) != "ResourceNotFoundException":
                    raise
                return
            variables = dict(config.get("Environment", {}).get("Variables", {}))
            endpoint = variables.pop("ENDPOINT_NAME", None)
            variables.pop("MODEL_VERSION", None)
            lam.update_function_configuration(FunctionName=self.function_name, Environment={"Variables": variables})
            lam.get_waiter("function_updated_v2").wait(FunctionName=self.function_name)
        log(f"lambda {self.function_name} no longer routes to {endpoint or 'any endpoint'}: the API answers 503")

    def current(self) -> ApiInfo | None:
        from botocore.exceptions import ClientError

        with aws_errors("reading the API"):
            api = self._find_api()
            if api is None:
                return None
            try:
                config = self.clients.client("lambda").get_function_configuration(FunctionName=self.function_name)
            except ClientError as error:
                if error_code(error) != "ResourceNotFoundException":
                    raise
                config = {}
        variables = config.get("Environment", {}).get("Variables", {})
        return ApiInfo(url=api["ApiEndpoint"], page_url=None, endpoint_name=variables.get("ENDPOINT_NAME"))


def _throttled(stage: dict[str, Any]) -> bool:
    """Whether ``stage`` (GetStages item) has :data:`THROTTLE` as its default route settings."""
    current = stage.get("DefaultRouteSettings") or {}
    return all(current.get(key) == value for key, value in THROTTLE.items())
