"""The small interfaces every backend implements, one per stage that differs between local and aws.

``get_backend(settings)`` picks the implementation at the stage boundary; flows and tasks only see these types.
Implementations live side by side: ``backends/local/<stage>.py`` and ``backends/aws/<stage>.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.config import Settings

LogLine = Callable[[str], None]


# --- values that cross the interface ---------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSpec:
    """A training job: SageMaker script-mode hyperparameters and S3-style channel URIs."""

    job_name: str
    hyperparameters: dict[str, Any]
    channels: dict[str, str]  # channel name -> store URI of the channel folder ("train", "validation")
    output_prefix: str  # store key prefix for the job's outputs
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingResult:
    job_name: str
    model_uri: str  # store URI of model.tar.gz
    metrics: dict[str, Any]  # final metrics + "history": [per-epoch dicts]
    hyperparameters: dict[str, Any]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    model_uri: str
    version: int
    status: str  # "Creating" | "InService" | "Failed" | "Deleting"
    url: str | None = None  # local: http://127.0.0.1:PORT ; aws: None
    created_at: str | None = None
    last_invoked_at: str | None = None
    instance_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApiInfo:
    url: str  # base URL of the API (POST {url}/predict)
    page_url: str | None
    endpoint_name: str | None


PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)
"""SageMaker Model Registry's ``ModelApprovalStatus`` values, used by both registries."""


@dataclass(frozen=True)
class RegisteredModel:
    """One model version in the model registry (local: a ``models`` row; aws: a model package)."""

    version: int
    model_uri: str
    status: str  # one of APPROVAL_STATUSES
    registered_at: str | None = None
    accuracy: float | None = None
    metrics_uri: str | None = None  # the evaluation report (aws: the package's ModelMetrics)
    promoted_at: str | None = None  # when the API last switched to it
    live: bool = False  # the API's model: the most recently promoted version
    reason: str | None = None  # why it was approved or rejected (aws: ApprovalDescription)
    tags: dict[str, str] = field(default_factory=dict)
    ref: str | None = None  # aws: the model package ARN; local: None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TeardownDecision:
    endpoint: EndpointInfo
    reason: str  # "idle" | "max-age"
    idle_minutes: float | None
    age_hours: float
    saved: str  # human summary of what deleting it saves


# --- interfaces ----------------------------------------------------------------------------------


@runtime_checkable
class ArtifactStore(Protocol):
    """Where archives, datasets, channels, models and reports live: a folder (local) or an S3 prefix (aws).

    Stage results that cross stages are URIs of this store (never machine-local paths), so any worker can run any
    stage; entries are content-addressed (their key names what they hold), so the store is never a second cache.
    """

    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def put_file(self, path: Path, key: str) -> tuple[str, bool]:
        """Upload unless an object with the same content exists; returns (uri, uploaded)."""
        ...

    def get_file(self, key: str, path: Path) -> Path: ...
    def key_from_uri(self, uri: str) -> str: ...
    def local_file(self, key: str) -> AbstractContextManager[Path]:
        """A local path with the object's content for the block: the file itself (local) or a download (aws)."""
        ...

    def publish_dir(self, prefix: str) -> AbstractContextManager[Path]:
        """An empty local folder; on success its files become ``prefix/…`` in the store as one entry (an existing
        entry with that prefix is kept: prefixes are content-addressed). A failure publishes nothing."""
        ...


@runtime_checkable
class Trainer(Protocol):
    def train(self, spec: TrainingSpec, log: LogLine) -> TrainingResult: ...


@runtime_checkable
class BatchTransformer(Protocol):
    def transform(self, model_uri: str, input_uri: str, output_prefix: str, log: LogLine) -> str:
        """Run inference over every line of the input; return the store URI prefix of the ``.out`` files."""
        ...


@runtime_checkable
class EndpointManager(Protocol):
    def deploy(self, name: str, model_uri: str, version: int, log: LogLine) -> EndpointInfo: ...
    def delete(self, name: str) -> None: ...
    def list(self) -> list[EndpointInfo]: ...
    def get(self, name: str) -> EndpointInfo | None: ...
    def invoke(self, name: str, body: bytes, content_type: str, accept: str = "application/json") -> bytes: ...
    def teardown_candidates(self, idle_minutes: float, max_age_hours: float | None) -> list[TeardownDecision]: ...


@runtime_checkable
class ApiGateway(Protocol):
    def point_to(self, endpoint: EndpointInfo, log: LogLine) -> ApiInfo: ...
    def current(self) -> ApiInfo | None: ...
    def clear(self, log: LogLine) -> None:
        """Stop routing to any endpoint: the API answers 503 "no model is deployed"."""
        ...


@runtime_checkable
class ModelRegistry(Protocol):
    """Model versions and their approval: registered when evaluated, rejected by the gate, a reviewer or a failed
    parity check, approved and made live when promoted. Local: SQLite in SENTIFLOW_HOME; aws: SageMaker Model
    Registry (one model package group, one package per model), so any machine sees the same history."""

    def register(
        self,
        model_uri: str,
        metrics_uri: str | None = None,
        tags: dict[str, str] | None = None,
        accuracy: float | None = None,
    ) -> RegisteredModel:
        """The version of ``model_uri``: the existing one (its missing metrics filled in), else a new version in
        status PendingManualApproval."""
        ...

    def reject(self, version: int, reason: str) -> RegisteredModel: ...
    def approve(self, version: int, reason: str = "promoted") -> RegisteredModel:
        """Status Approved and live (the API serves it now): the latest approval wins."""
        ...

    def get(self, version: int) -> RegisteredModel | None: ...
    def live(self) -> RegisteredModel | None:
        """The version the API serves (the most recently promoted), or None."""
        ...

    def previous_approved(self, version: int | None = None) -> RegisteredModel | None:
        """The highest promoted, Approved version below ``version`` (default: the live one), or None."""
        ...

    def list(self) -> list[RegisteredModel]:
        """Every version, oldest first."""
        ...


@dataclass(frozen=True)
class Backend:
    name: str
    store: ArtifactStore
    trainer: Trainer
    transformer: BatchTransformer
    endpoints: EndpointManager
    api: ApiGateway


def get_backend(settings: Settings) -> Backend:
    """The backend named by ``settings.backend`` (imported lazily: the aws one pulls in boto3)."""
    module = importlib.import_module(f"backends.{settings.backend}")
    return module.make_backend(settings)


def get_registry(settings: Settings) -> ModelRegistry:
    """The backend's model registry (``backends.<backend>.registry.make_registry``)."""
    module = importlib.import_module(f"backends.{settings.backend}.registry")
    return module.make_registry(settings)


def get_store(settings: Settings) -> ArtifactStore:
    """Only the backend's artifact store: cheap, for stages that need nothing else."""
    module = importlib.import_module(f"backends.{settings.backend}")
    return module.make_store(settings)
