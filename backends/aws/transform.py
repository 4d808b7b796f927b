"""SageMaker Batch Transform over the test channel, with output the local evaluation code reads unchanged.

boto3 ``CreateTransformJob`` rather than the SDK's ``Transformer``: it is one request whose fields we want
explicit (MultiRecord batches of CSV lines, Line assembly so ``<input>.out`` has one ``label,score`` line per
input line, in order — the same format as the local transformer), and waiting is a describe loop we need
anyway for progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors
from backends.aws.packaging import create_model, ensure_inference_code, tag_list
from backends.aws.storage import S3ArtifactStore
from backends.aws.training import sagemaker_name
from backends.base import LogLine
from core.errors import SentiflowError
from core.io import sha256_text

if TYPE_CHECKING:
    from core.config import Settings

FEATURES_FILE = "test_features.csv"
MAX_PAYLOAD_MB = 6
# model.inference refuses more than SENTIFLOW_SERVE_MAX_REVIEWS rows per request (256 by default, meant for
# the online endpoint); a 6 MB MultiRecord batch holds thousands of rows, so batch transform lifts the limit.
TRANSFORM_MAX_ROWS = 100_000
TERMINAL = {"Completed", "Failed", "Stopped"}


def features_uri(input_uri: str) -> str:
    """The CSV to transform: ``input_uri`` if it names a ``.csv``, else ``<input_uri>/test_features.csv``.

    Never the whole test folder: it also holds ``test_labels.csv`` and ``test.csv``, which must not be scored.
    """
    return input_uri if input_uri.endswith(".csv") else input_uri.rstrip("/") + "/" + FEATURES_FILE


def transform_job_request(
    *,
    settings: Settings,
    job_name: str,
    model_name: str,
    input_uri: str,
    output_uri: str,
    tags: dict[str, str],
) -> dict[str, Any]:
    """The ``CreateTransformJob`` request (pure; asserted field by field in the tests)."""
    return {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "Environment": {"SENTIFLOW_SERVE_MAX_REVIEWS": str(TRANSFORM_MAX_ROWS)},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": "text/csv",
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": settings.aws_transform_instance_type, "InstanceCount": 1},
        "Tags": tag_list(tags),
    }


class SageMakerBatchTransformer:
    """``BatchTransformer`` on SageMaker Batch Transform."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        store: S3ArtifactStore,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.store = store
        self.sleep = sleep

    def transform(self, model_uri: str, input_uri: str, output_prefix: str, log: LogLine) -> str:
        source = features_uri(input_uri)
        if not self.store.exists(self.store.key_from_uri(source)):
            raise SentiflowError(f"batch transform input {source} does not exist; run the data stages first")
        model_uri = ensure_inference_code(self.store, model_uri, log, vendored=self.settings.aws_network_isolation)
        isolated = "#network-isolation" if self.settings.aws_network_isolation else ""  # another Model, not reused
        digest = sha256_text(model_uri + isolated)[:10]
        tags = {"project": "sentiflow", "sentiflow:managed": "true", "sentiflow:stage": "evaluate"}
        model_name = create_model(
            self.clients,
            self.settings,
            name=sagemaker_name(f"{self.settings.aws_prefix}-bt-{digest}"),
            model_uri=model_uri,
            instance_type=self.settings.aws_transform_instance_type,
            tags={**tags, "sentiflow:model-uri": model_uri},
            log=log,
        )
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        job_name = sagemaker_name(f"{self.settings.aws_prefix}-bt-{stamp}-{sha256_text(output_prefix)[:6]}")
        output_uri = self.store.uri(output_prefix)
        request = transform_job_request(
            settings=self.settings,
            job_name=job_name,
            model_name=model_name,
            input_uri=source,
            output_uri=output_uri,
            tags=tags,
        )
        sagemaker = self.clients.client("sagemaker")
        with aws_errors(f"creating SageMaker transform job {job_name}"):
            sagemaker.create_transform_job(**request)
        log(
            f"transform job {job_name} created on {self.settings.aws_transform_instance_type}: {source} -> {output_uri}"
        )
        self.wait(job_name, log)
        out_key = f"{output_prefix.rstrip('/')}/{source.rsplit('/', 1)[-1]}.out"
        if not self.store.exists(out_key):
            raise SentiflowError(
                f"transform job {job_name} completed but {self.store.uri(out_key)} is missing; "
                f"see CloudWatch /aws/sagemaker/TransformJobs/{job_name}"
            )
        return output_uri

    def wait(self, job_name: str, log: LogLine) -> dict[str, Any]:
        """Poll the job until it ends; SentiflowError when it failed or was stopped."""
        sagemaker = self.clients.client("sagemaker")
        interval = self.settings.aws_poll_seconds
        last = ""
        while True:
            description = sagemaker.describe_transform_job(TransformJobName=job_name)
            status = description["TransformJobStatus"]
            if status != last:
                log(f"transform job {job_name}: {status}")
                last = status
            if status in TERMINAL:
                break
            self.sleep(interval)
        if status != "Completed":
            raise SentiflowError(
                f"SageMaker transform job {job_name} {status.lower()}: "
                f"{description.get('FailureReason') or 'no reason given'}; "
                f"logs: CloudWatch /aws/sagemaker/TransformJobs/{job_name}"
            )
        return description
