"""The ``CreateTrainingJob`` request for ``model/train.py`` — one builder, two runners.

The aws backend sends this dict to SageMaker with boto3; the local backend (``backends.sagemaker.local_job``) lays
out ``/opt/ml`` from the very same dict and runs the training container's toolkit on it. So whatever the local
backend proves about the request — hyperparameters as the script receives them, channels, the source bundle, the
distribution switch, metric regexes, the stopping condition — holds for the request AWS gets.

Why the v2 script-mode contract instead of the v3 SDK's ``ModelTrainer``: the PyTorch training container's own
entrypoint (sagemaker-training-toolkit) natively understands ``sagemaker_program`` / ``sagemaker_submit_directory``,
so a plain request with our ``sourcedir.tar.gz`` is the whole story — every field is explicit and reviewable, and
``ModelTrainer`` would replace the container entrypoint with its own bash drivers uploaded as extra channels.

The source bundle holds ``model/`` (self-contained: the training output copies it into ``code/`` for inference)
plus ``requirements.txt`` (``model/requirements.lock.txt``'s pins, each with its wheel's sha256) that the toolkit
pip-installs before running ``model/train.py``. Vendored (``SENTIFLOW_AWS_NETWORK_ISOLATION``), the bundle also
carries those wheels as ``model/wheels/`` and the requirements install from them only (``--no-index``); the model
the job writes then vendors them into ``code/wheels/`` too (``model.artifact.write_inference_code``).

Network isolation (``EnableNetworkIsolation``): the container cannot reach S3, so the bundle comes as a ``code``
input channel that SageMaker downloads, and ``sagemaker_submit_directory`` names its local path (what the SageMaker
SDK does for ``enable_network_isolation=True``).

Hyperparameters are exactly ``model.train.TrainConfig``'s fields (checked here, before any job starts, and again
by the script): a key such as ``model_dir`` or ``sagemaker_program`` is refused, so a flow parameter can never
redirect where training reads or writes, nor rewrite the job's own ``sagemaker_*`` settings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, SentiflowError
from model.artifact import ArtifactError, code_sources, pinned_wheels, requirements_txt, write_reproducible_tar

if TYPE_CHECKING:
    from backends.base import TrainingSpec
    from core.config import Settings

ENTRY_POINT = "model/train.py"
OPT_ML = "/opt/ml"
CODE_DIR = f"{OPT_ML}/code"
CHECKPOINT_LOCAL_PATH = f"{OPT_ML}/checkpoints"
VOLUME_SIZE_GB = 10
CHANNELS = ("train", "validation")
# Under network isolation the source bundle is this input channel; the toolkit unpacks it from the local path.
CODE_CHANNEL = "code"
ISOLATED_SUBMIT_DIRECTORY = f"{OPT_ML}/input/data/{CODE_CHANNEL}/sourcedir.tar.gz"
# The pinned wheels of model/requirements.lock.txt (`make lock` fetches them; committed, so builds are offline).
MODEL_WHEELS_DIR = Path(__file__).resolve().parents[2] / "requirements" / "model-wheels"
BUNDLE_WHEELS = "model/wheels"
# The PyTorch training toolkit's switch for torchrun across the job's instances (what the SageMaker SDK sends for
# ``distribution={"torch_distributed": {"enabled": True}}``).
DISTRIBUTED_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"
_NAME_OK = re.compile(r"[^a-zA-Z0-9-]+")


def metric_definitions() -> list[dict[str, str]]:
    """The training script's own log-line regexes (``model.train.METRIC_DEFINITIONS``)."""
    from model.train import METRIC_DEFINITIONS

    return [dict(item) for item in METRIC_DEFINITIONS]


def sagemaker_name(name: str, limit: int = 63) -> str:
    """A valid SageMaker resource name: ``[a-zA-Z0-9-]``, starts alphanumeric, at most ``limit`` chars."""
    clean = _NAME_OK.sub("-", name).strip("-")
    if not clean:
        raise SentiflowError(f"cannot make a SageMaker name from {name!r}")
    return clean[:limit].rstrip("-")


def train_instance_count(settings: Settings) -> int:
    """How many instances (each one torch DDP rank) the job gets: ``SENTIFLOW_TRAIN_INSTANCE_COUNT``, or its older
    name ``SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT`` (still read, for both backends)."""
    count, older = settings.train_instance_count, settings.aws_train_instance_count
    if older is not None and count != 1 and older != count:
        raise ConfigError(
            f"SENTIFLOW_TRAIN_INSTANCE_COUNT={count} and SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT={older} disagree; "
            "set only SENTIFLOW_TRAIN_INSTANCE_COUNT (the older name is an alias)"
        )
    return older if older is not None else count


def build_source_tarball(dest: Path, vendored: bool = False, wheels_dir: Path = MODEL_WHEELS_DIR) -> Path:
    """Write ``sourcedir.tar.gz`` (the ``model`` package and requirements.txt), byte-reproducible, to ``dest``;
    ``vendored`` adds the pinned wheels (hash-checked) as ``model/wheels/`` and installs only from them."""
    files: list[tuple[str, Path | bytes]] = [(f"model/{path.name}", path) for path in code_sources()]
    if ENTRY_POINT not in {name for name, _ in files}:
        raise SentiflowError(f"training entry point {ENTRY_POINT} not found; reinstall sentiflow from its source tree")
    try:
        if vendored:
            files += [(f"{BUNDLE_WHEELS}/{wheel.name}", wheel) for wheel in pinned_wheels(wheels_dir)]
        requirements = requirements_txt(wheels=BUNDLE_WHEELS if vendored else None)
    except ArtifactError as error:
        raise SentiflowError(f"training source bundle: {error}") from None
    files.append(("requirements.txt", requirements.encode()))
    return write_reproducible_tar(dest, files)


def job_hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    """The user's hyperparameters in canonical spelling (``hidden-dim`` → ``hidden_dim``), each checked against
    ``model.train.TrainConfig`` — key and value — before any job starts; ConfigError naming the allowed keys."""
    from model.train import TrainingError, check_hyperparameters

    try:
        return check_hyperparameters(dict(values))
    except TrainingError as error:
        raise ConfigError(f"training job: {error}") from error


def encode_hyperparameters(values: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value, as the SageMaker SDK does; the training toolkit decodes them and passes
    ``--key value`` (sorted by key) to the script."""
    return {str(key): json.dumps(value) for key, value in values.items()}


def training_job_request(
    *,
    settings: Settings,
    spec: TrainingSpec,
    job_name: str,
    region: str,
    role_arn: str,
    image_uri: str,
    submit_uri: str,
    output_uri: str,
    checkpoint_uri: str,
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (a pure function: the unit tests assert it field by field).

    ``InstanceCount > 1`` adds the torchrun switch; the channels stay ``FullyReplicated`` (every instance gets
    the whole train channel — one CSV plus the vocabulary files — and ``model/train.py`` gives each rank every
    N-th row of each batch: ``ShardedByS3Key`` would hand whole objects round-robin, the CSV to one instance and
    only the JSON files to another)."""
    count = train_instance_count(settings)
    hyperparameters: dict[str, Any] = job_hyperparameters(spec.hyperparameters)
    isolated = bool(settings.aws_network_isolation)
    hyperparameters.update(
        sagemaker_program=ENTRY_POINT,
        sagemaker_submit_directory=ISOLATED_SUBMIT_DIRECTORY if isolated else submit_uri,
        sagemaker_region=region,
        sagemaker_container_log_level=20,
        sagemaker_job_name=job_name,
    )
    if count > 1:
        hyperparameters[DISTRIBUTED_HYPERPARAMETER] = True
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.aws_max_runtime_s}
    if settings.aws_use_spot:  # spot capacity may take as long again to come
        stopping["MaxWaitTimeInSeconds"] = 2 * settings.aws_max_runtime_s
    channels = []
    for name in CHANNELS:
        if name not in spec.channels:
            raise SentiflowError(f"training spec {spec.job_name!r} has no {name!r} channel; run the data stages first")
        channels.append(
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": spec.channels[name].rstrip("/") + "/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
                "InputMode": "File",
            }
        )
    if isolated:  # the whole object as /opt/ml/input/data/code/sourcedir.tar.gz
        source = {"S3DataType": "S3Prefix", "S3Uri": submit_uri, "S3DataDistributionType": "FullyReplicated"}
        channels.append({"ChannelName": CODE_CHANNEL, "DataSource": {"S3DataSource": source}, "InputMode": "File"})
    tags = {"project": "sentiflow", "sentiflow:managed": "true", "sentiflow:stage": "train", **spec.tags}
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": encode_hyperparameters(hyperparameters),
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {
            "InstanceType": settings.aws_train_instance_type,
            "InstanceCount": count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(settings.aws_use_spot),
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        # model/train.py puts its parent folder on sys.path itself; PYTHONPATH helps any other tool.
        "Environment": {"PYTHONPATH": CODE_DIR, "PYTHONUNBUFFERED": "1"},
        "Tags": [{"Key": str(k), "Value": str(v)} for k, v in tags.items()],
    }
    if isolated:  # absent otherwise, as the SDK sends it
        request["EnableNetworkIsolation"] = True
    return request
