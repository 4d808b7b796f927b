"""SageMaker real-time endpoints: versioned model + config, blue/green updates, tag discovery, idle teardown.

Plain boto3 throughout: the v3 SDK's ``ModelBuilder.deploy`` sleeps 30 s before its first poll, re-uploads the
model to an SDK-chosen bucket and has no update-to-a-new-config call; ``UpdateEndpoint``, tags, listing and
CloudWatch queries are single boto3 requests.

Naming: endpoint ``<name>``; model and endpoint config ``<name>-v<version>-<UTC stamp>`` (never reused, so an
update never mutates what is serving). Every resource carries the tags ``project=sentiflow``,
``sentiflow:managed=true``, ``sentiflow:version``, ``sentiflow:model-uri`` and ``sentiflow:instance-type``;
``list()`` only ever returns (and ``delete()`` only ever touches) endpoints tagged ``sentiflow:managed=true``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors, error_code, error_message
from backends.aws.packaging import create_model, ensure_inference_code, tag_dict, tag_list
from backends.aws.storage import S3ArtifactStore
from backends.aws.training import sagemaker_name
from backends.base import EndpointInfo, LogLine, TeardownDecision
from core.errors import SentiflowError

if TYPE_CHECKING:
    from core.config import Settings

MANAGED_TAG = "sentiflow:managed"
VERSION_TAG = "sentiflow:version"
MODEL_URI_TAG = "sentiflow:model-uri"
INSTANCE_TYPE_TAG = "sentiflow:instance-type"
NAME_PREFIX = "sentiflow-"
"""Every endpoint sentiflow creates is named ``sentiflow-…`` (the operator policy grants only those): a name
without it is never described or tag-listed, so reading touches no one else's endpoint."""
VARIANT = "AllTraffic"
TRANSITIONAL = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed"}
BUSY = TRANSITIONAL - {"UpdateRollbackFailed"}
MAX_WAIT_S = 3600.0


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SageMakerEndpoints:
    """``EndpointManager`` on SageMaker hosting."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        store: S3ArtifactStore,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.store = store
        self.sleep = sleep
        self.now = now

    @property
    def sm(self) -> Any:
        return self.clients.client("sagemaker")

    # --- reading ----------------------------------------------------------------------------------------
    def _describe(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.sm.describe_endpoint(EndpointName=name)
        except ClientError as error:
            if error_code(error) == "ValidationException" and "Could not find" in error_message(error):
                return None
            raise

    def _tags(self, arn: str) -> dict[str, str]:
        tags: list[dict[str, str]] = []
        for page in self.sm.get_paginator("list_tags").paginate(ResourceArn=arn):
            tags.extend(page.get("Tags", []))
        return tag_dict(tags)

    def _info(self, description: dict[str, Any], tags: dict[str, str]) -> EndpointInfo:
        try:
            version = int(tags.get(VERSION_TAG, "0"))
        except ValueError:
            version = 0
        variants = [
            {
                "name": v.get("VariantName"),
                "instances": v.get("CurrentInstanceCount", v.get("DesiredInstanceCount")),
            }
            for v in description.get("ProductionVariants", [])
        ]
        return EndpointInfo(
            name=description["EndpointName"],
            model_uri=tags.get(MODEL_URI_TAG, ""),
            version=version,
            status=description["EndpointStatus"],
            url=None,
            created_at=_iso(description.get("CreationTime")),
            last_invoked_at=None,
            instance_type=tags.get(INSTANCE_TYPE_TAG),
            extra={
                "arn": description.get("EndpointArn"),
                "endpoint_config": description.get("EndpointConfigName"),
                "variants": variants,
                "failure_reason": description.get("FailureReason"),
                "region": self.clients.region,
            },
        )

    def get(self, name: str) -> EndpointInfo | None:
        """The sentiflow endpoint ``name`` (None if absent or not managed by sentiflow)."""
        if not name.startswith(NAME_PREFIX):
            return None
        with aws_errors(f"describing endpoint {name}"):
            description = self._describe(name)
            if description is None:
                return None
            tags = self._tags(description["EndpointArn"])
        return self._info(description, tags) if tags.get(MANAGED_TAG) == "true" else None

    def list(self) -> list[EndpointInfo]:
        """sentiflow's endpoints in the region (tag ``sentiflow:managed=true``), sorted by name."""
        found: list[EndpointInfo] = []
        with aws_errors("listing SageMaker endpoints"):
            for page in self.sm.get_paginator("list_endpoints").paginate(NameContains=NAME_PREFIX):
                for summary in page.get("Endpoints", []):
                    if not summary["EndpointName"].startswith(NAME_PREFIX):  # NameContains matches anywhere
                        continue
                    tags = self._tags(summary["EndpointArn"])
                    if tags.get(MANAGED_TAG) != "true":
                        continue
                    description = self._describe(summary["EndpointName"])
                    if description is not None:
                        found.append(self._info(description, tags))
        return sorted(found, key=lambda info: info.name)

    # --- deploying -----------------------------------------------------------------------------------------
    def deploy(self, name: str, model_uri: str, version: int, log: LogLine) -> EndpointInfo:
        """Create endpoint ``name`` or move it blue/green to ``model_uri``; old config serves on failure."""
        if name != sagemaker_name(name):
            raise SentiflowError(
                f"endpoint name {name!r} is not valid on SageMaker: use letters, digits and '-', at most 63 characters"
            )
        if not name.startswith(NAME_PREFIX):
            raise SentiflowError(
                f"endpoint name {name!r} was not created by sentiflow: sentiflow deploys only to endpoints named "
                f"{NAME_PREFIX}… (the operator policy grants no other)"
            )
        instance_type = self.settings.aws_endpoint_instance_type
        with aws_errors(f"deploying endpoint {name}", "see docs/aws.md for the operator policy"):
            existing = self._describe(name)
            if existing is not None:
                current_tags = self._tags(existing["EndpointArn"])
                if current_tags.get(MANAGED_TAG) != "true":
                    raise SentiflowError(
                        f"endpoint {name} exists but was not created by sentiflow "
                        f"(no {MANAGED_TAG}=true tag); "
                        "choose another endpoint name"
                    )
                if existing["EndpointStatus"] in BUSY:
                    raise SentiflowError(
                        f"endpoint {name} is {existing['EndpointStatus']}; wait until it is InService and deploy again"
                    )
            model_uri = ensure_inference_code(self.store, model_uri, log, vendored=self.settings.aws_network_isolation)
            stamp = self.now().strftime("%Y%m%d%H%M%S")
            resource_name = sagemaker_name(f"{name}-v{version}-{stamp}")
            tags = {
                "project": "sentiflow",
                MANAGED_TAG: "true",
                VERSION_TAG: str(version),
                MODEL_URI_TAG: model_uri,
                INSTANCE_TYPE_TAG: instance_type,
                "sentiflow:endpoint": name,
            }
            create_model(
                self.clients,
                self.settings,
                name=resource_name,
                model_uri=model_uri,
                instance_type=instance_type,
                tags=tags,
                log=log,
            )
            self.sm.create_endpoint_config(
                EndpointConfigName=resource_name,
                ProductionVariants=[
                    {
                        "VariantName": VARIANT,
                        "ModelName": resource_name,
                        "InitialInstanceCount": 1,
                        "InstanceType": instance_type,
                        "InitialVariantWeight": 1.0,
                    }
                ],
                Tags=tag_list(tags),
            )
            log(f"endpoint config {resource_name} created (1 x {instance_type})")
            if existing is None or existing["EndpointStatus"] == "Failed":
                if existing is not None:
                    log(f"endpoint {name} is Failed ({existing.get('FailureReason')}); replacing it")
                    self.sm.delete_endpoint(EndpointName=name)
                    self._wait_gone(name)
                self.sm.create_endpoint(EndpointName=name, EndpointConfigName=resource_name, Tags=tag_list(tags))
                log(f"endpoint {name} creating (v{version})")
                description = self._wait(name, log)
                if description["EndpointStatus"] != "InService":
                    raise SentiflowError(
                        f"endpoint {name} failed to start: "
                        f"{description.get('FailureReason') or 'no reason given'}; "
                        f"logs: CloudWatch /aws/sagemaker/Endpoints/{name}; "
                        "delete it with `sentiflow endpoints delete`"
                    )
            else:
                old_config = existing["EndpointConfigName"]
                self.sm.update_endpoint(
                    EndpointName=name, EndpointConfigName=resource_name, RetainAllVariantProperties=False
                )
                log(f"endpoint {name} updating blue/green: {old_config} -> {resource_name}")
                description = self._wait(name, log)
                if description["EndpointStatus"] != "InService" or description["EndpointConfigName"] != resource_name:
                    reason = description.get("FailureReason") or "no reason given"
                    serving = description.get("EndpointConfigName")
                    raise SentiflowError(
                        f"update of endpoint {name} to v{version} failed ({reason}); "
                        "SageMaker rolled back and "
                        f"{serving} (status {description['EndpointStatus']}) keeps serving; "
                        f"logs: CloudWatch /aws/sagemaker/Endpoints/{name}"
                    )
                self.sm.add_tags(ResourceArn=description["EndpointArn"], Tags=tag_list(tags))
        log(f"endpoint {name} InService with v{version} ({model_uri})")
        return self._info(description, tags)

    def _wait(self, name: str, log: LogLine) -> dict[str, Any]:
        """Poll until the endpoint leaves Creating/Updating; the final description."""
        interval = self.settings.aws_poll_seconds
        deadline = time.monotonic() + MAX_WAIT_S
        last = ""
        while True:
            description = self._describe(name)
            if description is None:
                raise SentiflowError(f"endpoint {name} disappeared while deploying (deleted by someone else?)")
            status = description["EndpointStatus"]
            if status != last:
                log(f"endpoint {name}: {status}")
                last = status
            if status not in TRANSITIONAL or status == "UpdateRollbackFailed":
                return description
            if time.monotonic() > deadline:
                raise SentiflowError(
                    f"endpoint {name} still {status} after {MAX_WAIT_S / 60:.0f} min; check the console"
                )
            self.sleep(interval)

    def _wait_gone(self, name: str) -> None:
        interval = self.settings.aws_poll_seconds
        deadline = time.monotonic() + MAX_WAIT_S
        while self._describe(name) is not None:
            if time.monotonic() > deadline:
                raise SentiflowError(f"endpoint {name} is still being deleted; retry later")
            self.sleep(interval)

    # --- deleting ---------------------------------------------------------------------------------------
    def delete(self, name: str) -> None:
        """Delete the endpoint (stops billing); its model and endpoint config stay for a fast restore."""
        info = self.get(name)
        if info is None:
            raise SentiflowError(
                f"no sentiflow endpoint named {name} in {self.clients.region}; see `sentiflow endpoints list`"
            )
        with aws_errors(f"deleting endpoint {name}"):
            self.sm.delete_endpoint(EndpointName=name)

    # --- invoking ---------------------------------------------------------------------------------------
    def invoke(self, name: str, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        """One request to the endpoint through sagemaker-runtime; the response body."""
        runtime = self.clients.client("sagemaker-runtime")
        from botocore.exceptions import ClientError

        try:
            with aws_errors(f"invoking endpoint {name}"):
                response = runtime.invoke_endpoint(
                    EndpointName=name, Body=body, ContentType=content_type, Accept=accept
                )
        except ClientError as error:
            if error_code(error) == "ModelError":
                raise SentiflowError(f"endpoint {name} rejected the request: {error_message(error)}") from error
            raise
        return response["Body"].read()

    # --- teardown -----------------------------------------------------------------------------------------
    def invocations(self, name: str, variant: str, start: datetime, end: datetime) -> float:
        """CloudWatch ``AWS/SageMaker`` ``Invocations`` sum of one variant between ``start`` and ``end``."""
        seconds = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
        response = self.clients.client("cloudwatch").get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=[{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": variant}],
            StartTime=start,
            EndTime=end,
            Period=seconds,
            Statistics=["Sum"],
        )
        return float(sum(point.get("Sum", 0.0) for point in response.get("Datapoints", [])))

    def _saved(self, info: EndpointInfo, age_hours: float) -> str:
        instances = sum(int(v.get("instances") or 0) for v in info.extra.get("variants", [])) or 1
        instance_type = info.instance_type or self.settings.aws_endpoint_instance_type
        price = self.settings.instance_prices_usd.get(instance_type)
        if price is None:
            return (
                f"{instances} x {instance_type} no longer billed (price unknown: add {instance_type} to "
                "SENTIFLOW_INSTANCE_PRICES_USD)"
            )
        hourly = instances * price
        return (
            f"{instances} x {instance_type}: {instances:g} instance-hours per hour = ${hourly:.3f}/hour "
            f"(${hourly * 24:.2f}/day) no longer billed; it ran {instances * age_hours:.1f} instance-hours "
            f"(~${hourly * age_hours:.2f})"
        )

    def teardown_candidates(self, idle_minutes: float, max_age_hours: float | None) -> list[TeardownDecision]:
        """InService sentiflow endpoints that had no invocations over the idle window, or are past max age."""
        now = self.now()
        window = timedelta(minutes=idle_minutes)
        decisions: list[TeardownDecision] = []
        with aws_errors("checking endpoints for teardown", "the operator needs cloudwatch:GetMetricStatistics"):
            for info in self.list():
                if info.status != "InService" or not info.created_at:
                    continue
                created = _aware(datetime.fromisoformat(info.created_at))
                age_hours = (now - created).total_seconds() / 3600
                if max_age_hours is not None and age_hours > max_age_hours:
                    decisions.append(TeardownDecision(info, "max-age", None, age_hours, self._saved(info, age_hours)))
                    continue
                if now - created < window:
                    continue  # too young to have been idle for the whole window
                variants = [v["name"] for v in info.extra.get("variants", []) if v.get("name")] or [VARIANT]
                if all(self.invocations(info.name, v, now - window, now) == 0 for v in variants):
                    decisions.append(
                        TeardownDecision(info, "idle", float(idle_minutes), age_hours, self._saved(info, age_hours))
                    )
        return decisions
