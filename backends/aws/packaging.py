"""Model packaging for SageMaker hosting: ``model.tar.gz`` with ``code/`` and the SageMaker Model resource.

The PyTorch inference container (sagemaker-pytorch-inference-toolkit) loads ``code/inference.py`` from the
unpacked model when ``SAGEMAKER_PROGRAM=inference.py`` and ``SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code``,
and installs ``code/requirements.txt`` at startup. ``model/train.py`` already writes ``code/`` into the model
folder, so the training output is normally deployable as is; :func:`ensure_inference_code` verifies that and
repacks only when ``code/`` is missing (e.g. a model trained by an older sentiflow), or when network isolation
needs ``code/wheels/`` and the archive has none (a model trained without isolation). This mirrors what the
SDK's ``ModelBuilder`` repack does, without downloading twice or uploading to an SDK-chosen bucket.

``SENTIFLOW_AWS_NETWORK_ISOLATION`` sets ``EnableNetworkIsolation`` on every Model (endpoints and batch transform):
the container then has no network, and installs ``code/requirements.txt`` from the vendored wheels.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors, error_code, error_message
from backends.aws.images import pytorch_image_uri
from backends.aws.storage import S3ArtifactStore
from backends.base import LogLine
from core.errors import ConfigError, SentiflowError

if TYPE_CHECKING:
    from core.config import Settings

REQUIRED_CODE = ("code/inference.py", "code/requirements.txt")
VENDORED_WHEELS = "code/wheels/"
REQUIRED_MODEL = ("model.pth", "model_info.json", "word_dict.json", "preprocessing.json")


def archive_members(tar_path: Path) -> set[str]:
    """Normalised file names inside a ``.tar.gz`` (no leading ``./``)."""
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            return {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SentiflowError(f"{tar_path} is not a readable model.tar.gz: {error}") from error


def repack_with_code(tar_path: Path, dest: Path, vendored: bool = False, keep_code: bool = False) -> Path:
    """Unpack ``tar_path``, add ``code/`` (entry, model/, requirements; ``vendored``: the pinned wheels too, or
    with ``keep_code`` only the wheels and a requirements.txt installing from them); pack to ``dest``."""
    from backends.sagemaker.training import MODEL_WHEELS_DIR
    from model.artifact import ArtifactError, pack_model_dir, unpack_model, vendor_wheels, write_inference_code

    with tempfile.TemporaryDirectory(prefix="sentiflow-repack-") as tmp:
        folder = unpack_model(tar_path, Path(tmp) / "model")
        try:
            if keep_code and vendored:
                vendor_wheels(folder / "code", MODEL_WHEELS_DIR)
            else:
                write_inference_code(folder, wheels=MODEL_WHEELS_DIR if vendored else None)
        except ArtifactError as error:
            raise SentiflowError(f"repacking {tar_path.name}: {error}") from None
        return pack_model_dir(folder, dest)


def ensure_inference_code(store: S3ArtifactStore, model_uri: str, log: LogLine, vendored: bool = False) -> str:
    """The URI of a deployable ``model.tar.gz``: ``model_uri`` itself, or a repacked copy beside it (``vendored``:
    one whose ``code/`` carries the pinned wheels, for a container without network)."""
    key = store.key_from_uri(model_uri)
    with tempfile.TemporaryDirectory(prefix="sentiflow-model-") as tmp:
        local = store.get_file(key, Path(tmp) / "model.tar.gz")
        members = archive_members(local)
        missing_model = [name for name in REQUIRED_MODEL if name not in members]
        if missing_model:
            raise SentiflowError(
                f"{model_uri} lacks {', '.join(missing_model)}; it is not a model written by model/train.py"
            )
        has_code = all(name in members for name in REQUIRED_CODE)
        has_wheels = any(name.startswith(VENDORED_WHEELS) for name in members)
        if has_code and (has_wheels or not vendored):
            return model_uri
        if has_code:
            log(f"{model_uri} has no code/wheels/; repacking it with the pinned wheels (network isolation)")
        else:
            log(f"{model_uri} has no code/inference.py; repacking it with the inference code")
        repacked = repack_with_code(local, Path(tmp) / "repacked.tar.gz", vendored=vendored, keep_code=has_code)
        folder = "repacked-vendored" if vendored else "repacked"
        parent = key.rsplit("/", 1)[0] if "/" in key else ""
        uri, _ = store.put_file(repacked, f"{parent}/{folder}/model.tar.gz" if parent else f"{folder}/model.tar.gz")
        return uri


def model_environment(region: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Container environment of the PyTorch inference toolkit contract."""
    return {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": region,
        **(extra or {}),
    }


def create_model(
    clients: AwsClients,
    settings: Settings,
    *,
    name: str,
    model_uri: str,
    instance_type: str,
    tags: dict[str, str],
    log: LogLine,
    environment: dict[str, str] | None = None,
) -> str:
    """Create SageMaker Model ``name`` (reused when it exists with the same model data); returns the name."""
    from botocore.exceptions import ClientError

    if not settings.aws_role_arn:
        raise ConfigError(
            "SageMaker models need an execution role: set SENTIFLOW_AWS_ROLE_ARN (see docs/aws.md, 'Roles')"
        )
    region = clients.region
    sagemaker = clients.client("sagemaker")
    container = {
        "Image": pytorch_image_uri(settings, region, instance_type, "inference"),
        "ModelDataUrl": model_uri,
        "Environment": model_environment(region, environment),
    }
    try:
        existing = sagemaker.describe_model(ModelName=name)
    except ClientError as error:
        if error_code(error) != "ValidationException":
            raise
        existing = None
    if existing is not None:
        if existing.get("PrimaryContainer", {}).get("ModelDataUrl") == model_uri:
            return name
        raise SentiflowError(
            f"SageMaker model {name} already exists with other model data "
            f"({existing.get('PrimaryContainer', {}).get('ModelDataUrl')}); delete it or pick another name"
        )
    request: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": settings.aws_role_arn,
        "PrimaryContainer": container,
        "Tags": tag_list(tags),
    }
    if settings.aws_network_isolation:  # the container gets no network: code/ must carry its wheels
        request["EnableNetworkIsolation"] = True
    with aws_errors(f"creating SageMaker model {name}", "check SENTIFLOW_AWS_ROLE_ARN and iam:PassRole"):
        try:
            sagemaker.create_model(**request)
        except ClientError as error:
            if error_code(error) == "ValidationException" and "already exist" in error_message(error):
                return name
            raise
    log(f"SageMaker model {name} created ({container['Image']})")
    return name


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """``{"k": "v"}`` -> ``[{"Key": "k", "Value": "v"}]`` (values clipped to AWS's 256 characters)."""
    return [{"Key": str(k)[:128], "Value": str(v)[:256]} for k, v in tags.items()]


def tag_dict(tags: list[dict[str, Any]]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags}
