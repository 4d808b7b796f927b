"""SageMaker Model Registry against the moto server: the lifecycle, the package fields, two machines, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.aws.registry import ACCURACY, PROMOTED_AT, SageMakerModelRegistry, group_name, make_registry
from core.config import Settings
from core.errors import SentiflowError
from tests.backends.registry_lifecycle import check_lifecycle
from tests.fixtures.moto_world import MotoWorld

pytestmark = pytest.mark.e2e  # the moto server

INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


def test_lifecycle_and_package_fields(aws_settings: Settings, moto_world: MotoWorld, tmp_path: Path) -> None:
    registry = make_registry(aws_settings)
    assert isinstance(registry, SageMakerModelRegistry) and registry.group == "sentiflow-models"
    base = f"s3://{moto_world.bucket}/sentiflow"
    uris = (f"{base}/runs/1/model.tar.gz", f"{base}/runs/2/model.tar.gz", f"{base}/runs/3/model.tar.gz")
    report = f"{base}/evaluations/run-1/evaluation.json"
    check_lifecycle(registry, uris, report)

    sm = moto_world.client("sagemaker")
    group = sm.describe_model_package_group(ModelPackageGroupName="sentiflow-models")
    assert group["ModelPackageGroupName"] == group_name(aws_settings)
    summaries = sm.list_model_packages(ModelPackageGroupName="sentiflow-models")["ModelPackageSummaryList"]
    assert sorted(s["ModelPackageVersion"] for s in summaries) == [1, 2, 3]
    first = sm.describe_model_package(ModelPackageName=registry.get(1).ref)
    container = first["InferenceSpecification"]["Containers"][0]
    assert (container["Image"], container["ModelDataUrl"]) == (INFERENCE_IMAGE, uris[0])
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert first["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large"]
    assert "text/csv" in first["InferenceSpecification"]["SupportedContentTypes"]
    statistics = first["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics == {"ContentType": "application/json", "S3Uri": report}
    assert first["ModelApprovalStatus"] == "Approved" and first["ApprovalDescription"] == "rolled back from v3"
    properties = first["CustomerMetadataProperties"]
    assert properties[ACCURACY] == "0.900000" and properties[PROMOTED_AT]
    assert properties["sentiflow:tag:run-id"] == "run-1"
    # DescribeModelPackage returns no tags and moto has no ListTags for model packages: the stored request
    package = moto_world.sagemaker_backend().model_packages[first["ModelPackageArn"]]
    tags = {t["Key"]: t["Value"] for t in package.tags}
    assert tags == {"project": "sentiflow", "sentiflow:managed": "true", "run-id": "run-1", "dataset-sha256": "abc"}
    rejected = sm.describe_model_package(ModelPackageName=registry.get(2).ref)
    assert rejected["ModelApprovalStatus"] == "Rejected"
    assert "ModelMetrics" not in rejected  # registered without a report

    # a second machine (another SENTIFLOW_HOME, fresh clients) sees the same history: nothing is local
    other = make_registry(aws_settings.model_copy(update={"home": tmp_path / "second-home"}))
    assert [(m.version, m.status, m.live) for m in other.list()] == [
        (m.version, m.status, m.live) for m in registry.list()
    ]
    assert not (tmp_path / "second-home").exists()


def test_unknown_version_is_named(aws_settings: Settings, moto_world: MotoWorld) -> None:
    registry = make_registry(aws_settings)
    with pytest.raises(SentiflowError, match="no model version 4 in model package group sentiflow-models"):
        registry.approve(4)
