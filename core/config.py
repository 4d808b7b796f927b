"""All of sentiflow's settings in one place.

Values come from (highest first): explicit overrides (CLI flags, flow parameters) → environment variables with the
``SENTIFLOW_`` prefix → a ``.env`` file in the working directory → the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFICIAL_DATA_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_DATA_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"


class Settings(BaseSettings):
    """sentiflow configuration (env prefix ``SENTIFLOW_``)."""

    model_config = SettingsConfigDict(env_prefix="SENTIFLOW_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------------
    home: Path = Field(Path(".sentiflow"), description="Caches, the local artifact store and state.")
    backend: Literal["local", "aws"] = Field("local", description="Where stages run.")

    # --- data ----------------------------------------------------------------------------------------
    data_url: str = Field(OFFICIAL_DATA_URL, description="IMDB archive: http(s)://, file://, s3:// or a path.")
    data_sha256: str | None = Field(None, description="Expected sha256 of a non-official archive.")
    vocab_size: int = Field(5000, ge=3, description="Vocabulary size including the pad (0) and infrequent (1) ids.")
    max_len: int = Field(500, ge=1, description="Reviews are truncated or padded to this many tokens.")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Stratified hold-out of the train split.")
    seed: int = Field(42, description="Seed for every random choice.")
    expected_rows_per_split: int = Field(25000, ge=1, description="Rows the validation suite expects per split.")
    min_review_chars: int = Field(10, ge=1)
    max_review_chars: int = Field(20000, ge=100)
    preprocess_workers: int = Field(0, ge=0, description="Processes for tokenizing; 0 means one per core.")

    # --- training ------------------------------------------------------------------------------------
    architecture: str = Field("bilstm-pool", description="Network variant (see model.network.ARCHITECTURES).")
    epochs: int = Field(4, ge=1)
    embedding_dim: int = Field(64, ge=1)
    hidden_dim: int = Field(128, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    patience: int = Field(2, ge=1, description="Early stopping: epochs without validation-loss improvement.")
    train_instance_count: int = Field(
        1, ge=1, description="Training instances, one torch DDP rank each: SageMaker instances (aws), local ranks."
    )

    # --- quality gate and serving --------------------------------------------------------------------
    min_accuracy: float = Field(0.85, ge=0, le=1)
    max_regression: float = Field(0.005, ge=0, le=1)
    parity_sample: int = Field(1000, ge=0)
    serve_host: str = Field("127.0.0.1")
    serve_max_body_bytes: int = Field(1 << 20, ge=1)
    serve_max_reviews: int = Field(256, ge=1)
    api_port: int = Field(8600, ge=0, le=65535)
    transform_max_payload_mb: int = Field(
        6, ge=1, le=100, description="Batch transform MaxPayloadInMB: the largest mini-batch of whole lines, in MiB."
    )

    # --- teardown ------------------------------------------------------------------------------------
    idle_minutes: float = Field(60, gt=0)
    max_age_hours: float | None = Field(None, gt=0)

    # --- notifications -------------------------------------------------------------------------------
    notify_url: str | None = Field(None, description="Slack webhook, Apprise URL or any http(s) URL.")

    # --- aws -----------------------------------------------------------------------------------------
    aws_region: str = Field("us-east-1")
    aws_bucket: str | None = Field(None, description="S3 bucket for the aws artifact store.")
    aws_prefix: str = Field("sentiflow")
    aws_role_arn: str | None = Field(None, description="SageMaker execution role.")
    aws_lambda_role_arn: str | None = Field(None, description="Execution role of the API Lambda.")
    aws_train_instance_type: str = Field("ml.m5.xlarge")
    aws_train_instance_count: int | None = Field(
        None, ge=1, description="Older name of SENTIFLOW_TRAIN_INSTANCE_COUNT (still read, for both backends)."
    )
    aws_use_spot: bool = Field(False)
    aws_transform_instance_type: str = Field("ml.m5.large")
    aws_endpoint_instance_type: str = Field("ml.m5.large")
    aws_framework_version: str = Field("2.5")
    aws_py_version: str = Field("py311")
    aws_poll_seconds: float = Field(30, gt=0, description="How often to poll SageMaker job and endpoint status.")
    aws_max_runtime_s: int = Field(6 * 3600, ge=60, description="Training job stopping condition.")
    aws_credentials_block: str | None = Field(None, description="Name of a prefect-aws AwsCredentials block.")
    instance_prices_usd: dict[str, float] = Field(
        default_factory=lambda: {
            "ml.t2.medium": 0.056,
            "ml.m5.large": 0.115,
            "ml.m5.xlarge": 0.23,
            "ml.c5.large": 0.102,
            "ml.g4dn.xlarge": 0.736,
        },
        description="On-demand USD per instance-hour (us-east-1), used to report what a teardown saves.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # --- derived locations ---------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def store_dir(self) -> Path:
        """Root of the local artifact store."""
        return self.home / "store"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-None overrides applied and validated (CLI flags, flow parameters)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if not clean:
            return self
        return type(self).model_validate({**self.model_dump(), **clean})


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides on top."""
    return Settings().with_overrides(**overrides)
