"""S3ArtifactStore against moto: URIs, sha256-skip uploads, downloads, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.aws.clients import AwsClients
from backends.aws.storage import S3ArtifactStore, split_s3_uri
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import sha256_file
from tests.fixtures.moto_world import MotoWorld

pytestmark = pytest.mark.e2e  # the moto server


def make_store(settings: Settings) -> S3ArtifactStore:
    return S3ArtifactStore(AwsClients(settings), settings.aws_bucket or "", settings.aws_prefix)


def test_put_get_and_skip_identical(aws_settings: Settings, moto_world: MotoWorld, tmp_path: Path) -> None:
    store = make_store(aws_settings)
    source = tmp_path / "train.csv"
    source.write_text("1,3,4,5\n")
    uri, uploaded = store.put_file(source, "runs/r1/train/train.csv")
    assert uploaded and uri == f"s3://{moto_world.bucket}/sentiflow/runs/r1/train/train.csv"
    head = moto_world.client("s3").head_object(Bucket=moto_world.bucket, Key="sentiflow/runs/r1/train/train.csv")
    assert head["Metadata"]["sha256"] == sha256_file(source)
    assert store.put_file(source, "runs/r1/train/train.csv") == (uri, False)
    source.write_text("0,2,9\n")
    assert store.put_file(source, "runs/r1/train/train.csv")[1] is True
    assert store.exists("runs/r1/train/train.csv") and not store.exists("runs/r1/nope.csv")
    copy = store.get_file("runs/r1/train/train.csv", tmp_path / "copy" / "train.csv")
    assert copy.read_text() == "0,2,9\n"
    assert store.key_from_uri(uri) == "runs/r1/train/train.csv"
    assert store.list("runs/r1") == ["runs/r1/train/train.csv"]
    assert store.sha256("runs/r1/train/train.csv") == sha256_file(source)


def test_errors(aws_settings: Settings, moto_world: MotoWorld, tmp_path: Path) -> None:
    store = make_store(aws_settings)
    with pytest.raises(SentiflowError, match="does not exist"):
        store.get_file("missing.csv", tmp_path / "x")
    with pytest.raises(SentiflowError, match="outside the artifact store"):
        store.key_from_uri("s3://other-bucket/sentiflow/a")
    with pytest.raises(SentiflowError, match="not an s3"):
        split_s3_uri("file:///tmp/a")
    with pytest.raises(ConfigError, match="SENTIFLOW_AWS_BUCKET"):
        S3ArtifactStore(AwsClients(aws_settings), "", "x")
    missing_bucket = S3ArtifactStore(AwsClients(aws_settings), "no-such-bucket-here", "p")
    (tmp_path / "f").write_text("x")
    with pytest.raises(SentiflowError, match="NoSuchBucket"):
        missing_bucket.put_file(tmp_path / "f", "f")


def test_make_backend_is_lazy_and_named(aws_settings: Settings) -> None:
    from backends.base import get_backend

    backend = get_backend(aws_settings)
    assert backend.name == "aws"
    assert backend.store.uri("a/b") == f"s3://{aws_settings.aws_bucket}/sentiflow/a/b"


def test_credentials_block_is_used(
    aws_settings: Settings, moto_world: MotoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_aws import AwsClientParameters, AwsCredentials

    block = AwsCredentials(
        aws_access_key_id="block-key",
        aws_secret_access_key="block-secret",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_world.endpoint_url),
    )
    loaded: list[str] = []

    def fake_load(name: str, **kwargs: object) -> AwsCredentials:
        loaded.append(name)
        return block

    monkeypatch.setattr(AwsCredentials, "load", staticmethod(fake_load))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    settings = aws_settings.with_overrides(aws_credentials_block="sentiflow-aws")
    clients = AwsClients(settings)
    s3 = clients.client("s3")
    assert loaded == ["sentiflow-aws"]
    assert s3.meta.endpoint_url == moto_world.endpoint_url and clients.region == "us-east-1"
    assert clients.session.get_credentials().access_key == "block-key"
    assert moto_world.bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_403_on_a_missing_key_is_one_line_naming_the_grant(moto_world: MotoWorld, tmp_path: Path) -> None:
    """Without s3:ListBucket, S3 answers HeadObject on a missing key with 403: the store names the grants to add
    instead of retrying a raw ClientError. moto's IAM mode does not model the ListBucket rule (it answers 404 to
    any caller with GetObject), so the 403 comes from a caller with no read grant at all — the same answer."""
    import boto3
    import httpx

    iam = moto_world.client("iam")
    user = f"no-read-{tmp_path.name[-8:]}"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:PutObject",
                                                      "Resource": f"arn:aws:s3:::{moto_world.bucket}/*"}]}  # fmt: skip
    iam.put_user_policy(UserName=user, PolicyName="put-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_world.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )

    class Clients:
        def client(self, service: str) -> object:
            return s3

    store = S3ArtifactStore(Clients(), moto_world.bucket, "sentiflow")  # type: ignore[arg-type]
    auth = f"{moto_world.endpoint_url}/moto-api/reset-auth"
    httpx.post(auth, content="0", headers={"Content-Type": "text/plain"}, timeout=10).raise_for_status()
    try:
        with pytest.raises(SentiflowError) as caught:
            store.exists("channels/never-written.csv")
    finally:
        httpx.post(auth, content="inf", headers={"Content-Type": "text/plain"}, timeout=10).raise_for_status()
    message = str(caught.value)
    assert "HTTP 403" in message and "grant s3:ListBucket on the bucket" in message and "\n" not in message
