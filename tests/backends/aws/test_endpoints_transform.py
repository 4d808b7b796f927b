"""Endpoints (deploy, blue/green update with rollback, list/get/invoke/delete, teardown), batch transform."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta

import pytest

from backends.aws.clients import AwsClients
from backends.aws.endpoints import SageMakerEndpoints
from backends.aws.storage import S3ArtifactStore
from backends.aws.transform import SageMakerBatchTransformer
from core.config import Settings
from core.errors import SentiflowError
from tests.backends.aws.helpers import fake_model_tar, fake_transform
from tests.fixtures.moto_world import MotoWorld

pytestmark = pytest.mark.e2e  # the moto server

INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


def parts(settings: Settings) -> tuple[AwsClients, S3ArtifactStore]:
    clients = AwsClients(settings)
    return clients, S3ArtifactStore(clients, settings.aws_bucket or "", settings.aws_prefix)


def put_model(world: MotoWorld, key: str, with_code: bool = True) -> str:
    uri = f"s3://{world.bucket}/sentiflow/{key}"
    world.put_bytes(uri, fake_model_tar(with_code))
    return uri


def test_deploy_update_rollback_list_invoke_delete(aws_settings: Settings, moto_world: MotoWorld) -> None:
    clients, store = parts(aws_settings)
    endpoints = SageMakerEndpoints(aws_settings, clients, store)
    sm = moto_world.client("sagemaker")
    v1 = put_model(moto_world, "runs/1/model.tar.gz")
    info = endpoints.deploy("sentiflow-sentiment", v1, 1, print)
    assert (info.status, info.version, info.model_uri, info.instance_type) == (
        "InService",
        1,
        v1,
        "ml.m5.large",
    )
    config_v1 = info.extra["endpoint_config"]
    config = sm.describe_endpoint_config(EndpointConfigName=config_v1)
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic",
        "ml.m5.large",
        1,
    )
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == moto_world.role_arn
    assert model["PrimaryContainer"]["Image"] == INFERENCE_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == v1
    env = model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py" and env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert env["SAGEMAKER_REGION"] == "us-east-1"
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=info.extra["arn"])["Tags"]}
    assert tags["sentiflow:managed"] == "true" and tags["sentiflow:version"] == "1"

    # blue/green: v2 via UpdateEndpoint to a new config
    v2 = put_model(moto_world, "runs/2/model.tar.gz")
    info2 = endpoints.deploy("sentiflow-sentiment", v2, 2, print)
    assert moto_world.update_requests[-1]["EndpointName"] == "sentiflow-sentiment"
    assert info2.extra["endpoint_config"] != config_v1 and info2.version == 2 and info2.model_uri == v2
    assert endpoints.get("sentiflow-sentiment").version == 2

    # a failed update: SageMaker keeps the old config serving, sentiflow raises and the tags stay on v2
    moto_world.fail_next_update = "ClientError: container health check failed"
    v3 = put_model(moto_world, "runs/3/model.tar.gz")
    with pytest.raises(SentiflowError, match="health check failed.*keeps serving"):
        endpoints.deploy("sentiflow-sentiment", v3, 3, print)
    assert (
        sm.describe_endpoint(EndpointName="sentiflow-sentiment")["EndpointConfigName"] == info2.extra["endpoint_config"]
    )
    assert endpoints.get("sentiflow-sentiment").version == 2

    # foreign endpoints are invisible
    sm.create_endpoint(EndpointName="someone-else", EndpointConfigName=config_v1)
    assert [e.name for e in endpoints.list()] == ["sentiflow-sentiment"]
    assert endpoints.get("someone-else") is None
    with pytest.raises(SentiflowError, match="not created by sentiflow"):
        endpoints.deploy("someone-else", v1, 1, print)

    moto_world.seed_endpoint_results(['{"label": "positive", "score": 0.97}'])
    assert endpoints.invoke("sentiflow-sentiment", b'{"review": "great"}', "application/json") == (
        b'{"label": "positive", "score": 0.97}'
    )

    endpoints.delete("sentiflow-sentiment")
    assert endpoints.list() == []
    sm.describe_endpoint_config(EndpointConfigName=config_v1)  # kept for a fast restore
    sm.describe_model(ModelName=variant["ModelName"])
    with pytest.raises(SentiflowError, match="no sentiflow endpoint"):
        endpoints.delete("sentiflow-sentiment")


def test_repack_when_code_missing(aws_settings: Settings, moto_world: MotoWorld) -> None:
    clients, store = parts(aws_settings)
    endpoints = SageMakerEndpoints(aws_settings, clients, store)
    bare = put_model(moto_world, "runs/9/model.tar.gz", with_code=False)
    info = endpoints.deploy("sentiflow-bare", bare, 1, print)
    assert info.model_uri.endswith("runs/9/repacked/model.tar.gz")
    data = moto_world.client("s3").get_object(Bucket=moto_world.bucket, Key="sentiflow/runs/9/repacked/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(data["Body"].read()), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"code/inference.py", "code/requirements.txt", "code/model/inference.py", "model.pth"} <= names


def test_teardown_candidates(aws_settings: Settings, moto_world: MotoWorld) -> None:
    clients, store = parts(aws_settings)
    endpoints = SageMakerEndpoints(aws_settings, clients, store)
    endpoints.deploy("sentiflow-idle", put_model(moto_world, "m/1.tar.gz"), 1, print)
    endpoints.deploy("sentiflow-busy", put_model(moto_world, "m/2.tar.gz"), 1, print)
    assert endpoints.teardown_candidates(idle_minutes=60, max_age_hours=None) == []  # younger than the window
    later = datetime.now(UTC) + timedelta(minutes=3)
    moto_world.seed_invocations("sentiflow-busy", 5, at=later - timedelta(minutes=1))
    endpoints.now = lambda: later
    decisions = endpoints.teardown_candidates(idle_minutes=2, max_age_hours=None)
    assert [(d.endpoint.name, d.reason) for d in decisions] == [("sentiflow-idle", "idle")]
    assert "$0.115/hour" in decisions[0].saved and "1 x ml.m5.large" in decisions[0].saved
    endpoints.now = lambda: datetime.now(UTC) + timedelta(hours=3)
    decisions = endpoints.teardown_candidates(idle_minutes=60, max_age_hours=2)
    assert sorted((d.endpoint.name, d.reason) for d in decisions) == [
        ("sentiflow-busy", "max-age"),
        ("sentiflow-idle", "max-age"),
    ]
    assert decisions[0].age_hours == pytest.approx(3, abs=0.1)


def test_batch_transform(aws_settings: Settings, moto_world: MotoWorld) -> None:
    moto_world.transform_player = fake_transform
    clients, store = parts(aws_settings)
    transformer = SageMakerBatchTransformer(aws_settings, clients, store)
    model_uri = put_model(moto_world, "runs/1/model.tar.gz")
    test_dir = store.uri("runs/1/channels/test")
    moto_world.put_bytes(f"{test_dir}/test_features.csv", b"3,4,5,6\n2,7,8,0\n")
    moto_world.put_bytes(f"{test_dir}/test_labels.csv", b"1\n0\n")
    out = transformer.transform(model_uri, test_dir, "runs/1/evaluation/transform", print)
    assert out == store.uri("runs/1/evaluation/transform")
    assert moto_world.read_text(f"{out}/test_features.csv.out") == "positive,0.9\npositive,0.9\n"
    job, model = moto_world.seen_transform  # type: ignore[attr-defined]
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"{test_dir}/test_features.csv"
    assert job["TransformInput"]["ContentType"] == "text/csv" and job["TransformInput"]["SplitType"] == "Line"
    assert job["TransformOutput"]["AssembleWith"] == "Line" and job["TransformOutput"]["Accept"] == "text/csv"
    assert job["BatchStrategy"] == "MultiRecord"
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_uri
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    with pytest.raises(SentiflowError, match="does not exist"):
        transformer.transform(model_uri, store.uri("runs/none/test"), "x", print)


def test_failed_transform(aws_settings: Settings, moto_world: MotoWorld) -> None:
    def broken(world: MotoWorld, job: dict, model: dict) -> None:
        raise ValueError("text/csv line 1 is not comma-separated integers")

    moto_world.transform_player = broken
    clients, store = parts(aws_settings)
    transformer = SageMakerBatchTransformer(aws_settings, clients, store)
    model_uri = put_model(moto_world, "runs/1/model.tar.gz")
    moto_world.put_bytes(store.uri("t/test_features.csv"), b"x\n")
    with pytest.raises(SentiflowError, match="failed: ClientError: text/csv line 1"):
        transformer.transform(model_uri, store.uri("t"), "out", print)


def test_network_isolation_models_and_their_vendored_code(aws_settings: Settings, moto_world: MotoWorld) -> None:
    """SENTIFLOW_AWS_NETWORK_ISOLATION: CreateModel carries EnableNetworkIsolation (moto accepts the field but its
    DescribeModel always answers False, so the request as sent is what is checked), and a model.tar.gz without
    code/wheels/ is repacked with the pinned wheels and a requirements.txt that installs only from them."""
    settings = aws_settings.with_overrides(aws_network_isolation=True)
    clients, store = parts(settings)
    sent: list[dict] = []
    clients.client("sagemaker").meta.events.register(
        "provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.append(dict(params))
    )
    endpoints = SageMakerEndpoints(settings, clients, store)
    v1 = put_model(moto_world, "runs/5/model.tar.gz")
    info = endpoints.deploy("sentiflow-isolated", v1, 1, print)
    assert [request.get("EnableNetworkIsolation") for request in sent] == [True]
    assert info.model_uri == f"s3://{moto_world.bucket}/sentiflow/runs/5/repacked-vendored/model.tar.gz"
    assert sent[0]["PrimaryContainer"]["ModelDataUrl"] == info.model_uri
    data = moto_world.client("s3").get_object(
        Bucket=moto_world.bucket, Key="sentiflow/runs/5/repacked-vendored/model.tar.gz"
    )
    with tarfile.open(fileobj=io.BytesIO(data["Body"].read()), mode="r:gz") as tar:
        wheels = [name for name in tar.getnames() if name.startswith("code/wheels/")]
        requirements = tar.extractfile("code/requirements.txt").read().decode()  # type: ignore[union-attr]
    assert wheels and all(name.endswith(".whl") for name in wheels)
    assert requirements.splitlines()[1:3] == ["--no-index", "--find-links wheels"]
    endpoints.delete("sentiflow-isolated")

    plain_clients, plain_store = parts(aws_settings)  # the default: no field at all, the archive as it is
    plain_clients.client("sagemaker").meta.events.register(
        "provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.append(dict(params))
    )
    plain = SageMakerEndpoints(aws_settings, plain_clients, plain_store).deploy("sentiflow-open", v1, 1, print)
    assert "EnableNetworkIsolation" not in sent[-1] and plain.model_uri == v1
    SageMakerEndpoints(aws_settings, plain_clients, plain_store).delete("sentiflow-open")


def test_network_isolation_batch_transform_model(aws_settings: Settings, moto_world: MotoWorld) -> None:
    """The batch-transform Model gets the flag too, from the vendored repack, under a name of its own."""
    moto_world.transform_player = fake_transform
    settings = aws_settings.with_overrides(aws_network_isolation=True)
    clients, store = parts(settings)
    sent: list[dict] = []
    clients.client("sagemaker").meta.events.register(
        "provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.append(dict(params))
    )
    model_uri = put_model(moto_world, "runs/1/model.tar.gz")
    test_dir = store.uri("runs/1/channels/test")
    moto_world.put_bytes(f"{test_dir}/test_features.csv", b"3,4,5,6\n")
    moto_world.put_bytes(f"{test_dir}/test_labels.csv", b"1\n")
    SageMakerBatchTransformer(settings, clients, store).transform(model_uri, test_dir, "runs/1/evaluation/t", print)
    assert len(sent) == 1 and sent[0]["EnableNetworkIsolation"] is True
    assert sent[0]["PrimaryContainer"]["ModelDataUrl"].endswith("/runs/1/repacked-vendored/model.tar.gz")
