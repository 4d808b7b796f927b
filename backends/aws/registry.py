"""The model registry on SageMaker Model Registry: one model package group per project, one package per model.

* Group ``<prefix>-models`` (``SENTIFLOW_AWS_PREFIX``, default ``sentiflow-models``), created on first use.
* A package per trained model: ``InferenceSpecification`` (the PyTorch inference image of ``backends.aws.images``,
  ``ModelDataUrl`` = the model's ``model.tar.gz``, the toolkit environment, content types, instance types),
  ``ModelMetrics.ModelQuality.Statistics`` = the evaluation report in S3, tags (project, run id, dataset hash)
  and ``CustomerMetadataProperties`` (accuracy, run id, dataset hash, and ``sentiflow:promoted-at`` once
  promoted). The package version (``ModelPackageVersion``) is the model version endpoints are named after.
* ``ModelApprovalStatus``: ``PendingManualApproval`` on register, ``Rejected`` when the gate, a reviewer or the
  parity check turns it down, ``Approved`` on promotion (``ApprovalDescription`` says why). The live model is
  the package promoted last (highest ``sentiflow:promoted-at``); rollback takes the highest promoted, Approved
  version below it — so every machine sees the same history, with nothing read from SENTIFLOW_HOME.

Plain boto3 (``sagemaker:CreateModelPackageGroup``, ``DescribeModelPackageGroup``, ``CreateModelPackage``,
``ListModelPackages``, ``DescribeModelPackage``, ``UpdateModelPackage``). ``DescribeModelPackage`` does not
return tags, so what sentiflow reads back lives in ``CustomerMetadataProperties``; ``UpdateModelPackage`` is
always sent the whole property map.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors, error_code, error_message
from backends.aws.images import pytorch_image_uri
from backends.aws.packaging import model_environment, tag_list
from backends.base import APPROVED, PENDING, REJECTED, RegisteredModel
from backends.sagemaker.training import sagemaker_name
from core.errors import SentiflowError

if TYPE_CHECKING:
    from core.config import Settings

ACCURACY = "sentiflow:accuracy"
PROMOTED_AT = "sentiflow:promoted-at"
TAG_PREFIX = "sentiflow:tag:"  # tags given to register(), readable back through DescribeModelPackage
MAX_DESCRIPTION = 1000  # ApprovalDescription / ModelPackageDescription allow 1024 characters
CONTENT_TYPES = ["application/json", "text/csv"]
RESPONSE_TYPES = ["application/json", "text/csv"]


def group_name(settings: Settings) -> str:
    """The model package group of this project: ``<SENTIFLOW_AWS_PREFIX>-models``."""
    return sagemaker_name(f"{settings.aws_prefix.strip('/').replace('/', '-') or 'sentiflow'}-models")


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _not_found(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    return (
        isinstance(error, ClientError)
        and error_code(error) == "ValidationException"
        and any(text in error_message(error).lower() for text in ("does not exist", "not found"))
    )


class SageMakerModelRegistry:
    """:class:`backends.base.ModelRegistry` on SageMaker Model Registry."""

    def __init__(
        self, settings: Settings, clients: AwsClients, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.group = group_name(settings)
        self.now = now

    @property
    def sm(self) -> Any:
        return self.clients.client("sagemaker")

    # --- reading -----------------------------------------------------------------------------------------
    def _packages(self) -> list[dict[str, Any]]:
        """DescribeModelPackage of every package in the group, lowest version first ([] without the group)."""
        summaries: list[dict[str, Any]] = []
        with aws_errors(
            f"listing model packages of group {self.group}", "the operator needs sagemaker:ListModelPackages"
        ):
            try:
                for page in self.sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=self.group):
                    summaries.extend(page.get("ModelPackageSummaryList", []))
            except Exception as error:
                if _not_found(error):
                    return []
                raise
            described = [self.sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]
        return sorted(described, key=lambda package: int(package.get("ModelPackageVersion") or 0))

    def _view(self, package: dict[str, Any], live_arn: str | None) -> RegisteredModel:
        properties = package.get("CustomerMetadataProperties") or {}
        containers = package.get("InferenceSpecification", {}).get("Containers") or [{}]
        statistics = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
        try:
            accuracy = float(properties[ACCURACY]) if properties.get(ACCURACY) else None
        except ValueError:
            accuracy = None
        return RegisteredModel(
            version=int(package.get("ModelPackageVersion") or 0),
            model_uri=containers[0].get("ModelDataUrl", ""),
            status=package.get("ModelApprovalStatus") or PENDING,
            registered_at=_iso(package.get("CreationTime")),
            accuracy=accuracy,
            metrics_uri=statistics.get("S3Uri"),
            promoted_at=properties.get(PROMOTED_AT),
            live=package["ModelPackageArn"] == live_arn,
            reason=package.get("ApprovalDescription"),
            tags={k.removeprefix(TAG_PREFIX): v for k, v in properties.items() if k.startswith(TAG_PREFIX)},
            ref=package["ModelPackageArn"],
        )

    @staticmethod
    def _live_arn(packages: list[dict[str, Any]]) -> str | None:
        promoted = [p for p in packages if (p.get("CustomerMetadataProperties") or {}).get(PROMOTED_AT)]
        if not promoted:
            return None
        latest = max(
            promoted,
            key=lambda p: (p["CustomerMetadataProperties"][PROMOTED_AT], int(p.get("ModelPackageVersion") or 0)),
        )
        return latest["ModelPackageArn"]

    def _views(self) -> list[RegisteredModel]:
        packages = self._packages()
        live = self._live_arn(packages)
        return [self._view(package, live) for package in packages]

    def _package(self, version: int) -> dict[str, Any]:
        for package in self._packages():
            if int(package.get("ModelPackageVersion") or 0) == version:
                return package
        raise SentiflowError(
            f"no model version {version} in model package group {self.group} ({self.clients.region}); "
            "see `sentiflow models list`"
        )

    def get(self, version: int) -> RegisteredModel | None:
        views = [view for view in self._views() if view.version == version]
        return views[0] if views else None

    def list(self) -> list[RegisteredModel]:
        return self._views()

    def live(self) -> RegisteredModel | None:
        return next((view for view in self._views() if view.live), None)

    def previous_approved(self, version: int | None = None) -> RegisteredModel | None:
        views = self._views()
        if version is None:
            live = next((view for view in views if view.live), None)
            if live is None:
                return None
            version = live.version
        older = [v for v in views if v.version < version and v.status == APPROVED and v.promoted_at]
        return older[-1] if older else None

    # --- writing -----------------------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        with aws_errors(
            f"creating model package group {self.group}", "the operator needs sagemaker:CreateModelPackageGroup"
        ):
            try:
                self.sm.describe_model_package_group(ModelPackageGroupName=self.group)
                return
            except Exception as error:
                if not _not_found(error):
                    raise
            try:
                self.sm.create_model_package_group(
                    ModelPackageGroupName=self.group,
                    ModelPackageGroupDescription="sentiflow IMDB sentiment models (one package per trained model)",
                    Tags=tag_list({"project": "sentiflow", "sentiflow:managed": "true"}),
                )
            except Exception as error:  # another worker created it first
                if "already exist" not in str(error).lower():
                    raise

    def _inference_specification(self, model_uri: str) -> dict[str, Any]:
        region, endpoint_type = self.clients.region, self.settings.aws_endpoint_instance_type
        return {
            "Containers": [
                {
                    "Image": pytorch_image_uri(self.settings, region, endpoint_type, "inference"),
                    "ModelDataUrl": model_uri,
                    "Environment": model_environment(region),
                }
            ],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": RESPONSE_TYPES,
            "SupportedRealtimeInferenceInstanceTypes": [endpoint_type],
            "SupportedTransformInstanceTypes": [self.settings.aws_transform_instance_type],
        }

    def register(
        self,
        model_uri: str,
        metrics_uri: str | None = None,
        tags: dict[str, str] | None = None,
        accuracy: float | None = None,
    ) -> RegisteredModel:
        packages = self._packages()
        existing = next((p for p in packages if self._view(p, None).model_uri == model_uri), None)
        if existing is not None:
            properties = dict(existing.get("CustomerMetadataProperties") or {})
            wanted = {**{f"{TAG_PREFIX}{k}": str(v)[:256] for k, v in (tags or {}).items()}, **properties}
            if accuracy is not None and not properties.get(ACCURACY):
                wanted[ACCURACY] = f"{accuracy:.6f}"
            if wanted != properties:
                self._update(existing, existing.get("ModelApprovalStatus") or PENDING, None, wanted)
                existing = self.sm.describe_model_package(ModelPackageName=existing["ModelPackageArn"])
            return self._view(existing, self._live_arn(packages))
        self._ensure_group()
        properties = {f"{TAG_PREFIX}{k}": str(v)[:256] for k, v in (tags or {}).items()}
        if accuracy is not None:
            properties[ACCURACY] = f"{accuracy:.6f}"
        request: dict[str, Any] = {
            "ModelPackageGroupName": self.group,
            "ModelPackageDescription": f"sentiflow model {model_uri}"[:MAX_DESCRIPTION],
            "InferenceSpecification": self._inference_specification(model_uri),
            "ModelApprovalStatus": PENDING,
            "CertifyForMarketplace": False,
            "ClientToken": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.group}:{model_uri}")),
            "Tags": tag_list({"project": "sentiflow", "sentiflow:managed": "true", **(tags or {})}),
        }
        if properties:
            request["CustomerMetadataProperties"] = properties
        if metrics_uri:
            request["ModelMetrics"] = {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}
            }
        with aws_errors(
            f"registering {model_uri} in model package group {self.group}",
            "the operator needs sagemaker:CreateModelPackage",
        ):
            arn = self.sm.create_model_package(**request)["ModelPackageArn"]
            package = self.sm.describe_model_package(ModelPackageName=arn)
        return self._view(package, self._live_arn(packages))

    def _update(self, package: dict[str, Any], status: str, reason: str | None, properties: dict[str, str]) -> None:
        request: dict[str, Any] = {
            "ModelPackageArn": package["ModelPackageArn"],
            "ModelApprovalStatus": status,
            "CustomerMetadataProperties": properties,
        }
        description = reason if reason is not None else package.get("ApprovalDescription")
        if description:
            request["ApprovalDescription"] = description[:MAX_DESCRIPTION]
        with aws_errors(
            f"updating model package {package['ModelPackageArn']}", "the operator needs sagemaker:UpdateModelPackage"
        ):
            self.sm.update_model_package(**request)

    def reject(self, version: int, reason: str) -> RegisteredModel:
        package = self._package(version)
        self._update(package, REJECTED, reason, dict(package.get("CustomerMetadataProperties") or {}))
        return self.get(version) or self._view(package, None)

    def approve(self, version: int, reason: str = "promoted") -> RegisteredModel:
        package = self._package(version)
        properties = {
            **(package.get("CustomerMetadataProperties") or {}),
            PROMOTED_AT: self.now().isoformat(timespec="microseconds"),
        }
        self._update(package, APPROVED, reason, properties)
        return self.get(version) or self._view(package, package["ModelPackageArn"])


def make_registry(settings: Settings) -> SageMakerModelRegistry:
    """The SageMaker Model Registry of ``settings`` (region, credentials as for every aws client)."""
    return SageMakerModelRegistry(settings, AwsClients(settings))
