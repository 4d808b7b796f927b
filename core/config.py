"""All of sentiflow's settings in one place.

Values come from (highest first): explicit overrides (CLI flags, flow parameters) → environment variables with the
``SENTIFLOW_`` prefix → a ``.env`` file in the working directory → the defaults below.

A bad value never surfaces as pydantic's multi-line report: :func:`get_settings` and :meth:`Settings.with_overrides`
raise one :class:`~core.errors.ConfigError` line that names where the value came from (``SENTIFLOW_VOCAB_SIZE``,
``--backend``, flow parameter ``epochs``) and what the setting accepts.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import Field, SecretStr, ValidationError, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from core.errors import ConfigError
from core.redact import redact_url

OFFICIAL_DATA_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_DATA_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"

ENV_PREFIX = "SENTIFLOW_"
Architecture = Literal["nb-lstm", "bilstm-pool", "lstm-pool", "reference"]
"""The network variants of ``model.network.ARCHITECTURES`` (a unit test keeps the two lists equal)."""
DATA_SCHEMES = ("http", "https", "file", "s3")

_SHA256 = r"^(sha256:)?[0-9a-fA-F]{64}$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-\d+$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$"
_INSTANCE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
_VERSION = r"^\d+\.\d+(\.\d+)?$"
_PY_VERSION = r"^py3\d+$"
_BLOCK_NAME = r"^[a-z0-9][a-z0-9-]*$"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_PATTERN_WORDS = {
    _SHA256: "64 hex digits (as `sha256sum FILE` prints them)",
    _REGION: "an AWS region name such as us-east-1",
    _BUCKET: "an S3 bucket name (3-63 lowercase letters, digits, dots and dashes)",
    _ROLE_ARN: "an IAM role ARN such as arn:aws:iam::123456789012:role/NAME",
    _INSTANCE: "a SageMaker instance type such as ml.m5.large",
    _VERSION: "a version such as 2.5",
    _PY_VERSION: "a Python version tag such as py311",
    _BLOCK_NAME: "a Prefect block name (lowercase letters, digits and dashes)",
}
"""What each string pattern means, in words, for error messages."""

SECRET_FIELDS = frozenset({"notify_url"})
"""Settings whose value is never shown, not even in an error message."""
URL_FIELDS = frozenset({"data_url"})
"""Settings that may carry credentials in a URL: shown redacted (``core.redact.redact_url``)."""

OPEN_HOST_HINT = (
    "put an authenticating reverse proxy (TLS + auth) in front of a server on 127.0.0.1 to reach it from elsewhere"
)
"""How to reach a sentiflow server from another host without opening it unauthenticated."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_host(host: str, what: str, how: str = OPEN_HOST_HINT) -> None:
    """ConfigError (one line) unless ``host`` is a loopback address: ``what`` would be open to the network."""
    if not is_loopback(host):
        raise ConfigError(f"refusing to serve {what} on {host} without authentication: keep 127.0.0.1, or {how}")


_ACCEPTS_BY_VALIDATOR = {
    "data_url": "an http(s)://, file:// or s3:// URL, or a local path",
    "serve_host": "a loopback address such as 127.0.0.1 or localhost",
    "notify_url": "a URL with a scheme: a Slack webhook, an Apprise URL (mailto://, json://…) or an http(s):// URL",
}
"""What fields with a custom validator accept."""


class Settings(BaseSettings):
    """sentiflow configuration (env prefix ``SENTIFLOW_``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True)

    # --- where things live -------------------------------------------------------------------------
    home: Path = Field(Path(".sentiflow"), description="The local artifact store, state and Prefect's database.")
    backend: Literal["local", "aws"] = Field("local", description="Where stages run.")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the managed local Prefect server (API, UI).")

    # --- data ----------------------------------------------------------------------------------------
    data_url: str = Field(
        OFFICIAL_DATA_URL, repr=False, description="IMDB archive: http(s)://, file://, s3:// or a path."
    )  # may carry credentials (user:pass@, a signed query): shown only through core.redact
    data_sha256: str | None = Field(None, pattern=_SHA256, description="Expected sha256 of a non-official archive.")
    vocab_size: int = Field(50_000, ge=3, description="Vocabulary size including the pad (0) and infrequent (1) ids.")
    max_len: int = Field(3_000, ge=1, description="Reviews are truncated to this many tokens (3,000: whole reviews).")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Stratified hold-out of the train split.")
    seed: int = Field(42, ge=0, description="Seed for every random choice.")
    expected_rows_per_split: int = Field(25000, ge=1, description="Rows the validation suite expects per split.")
    min_review_chars: int = Field(10, ge=1)
    max_review_chars: int = Field(20000, ge=100)

    # --- training ------------------------------------------------------------------------------------
    architecture: Architecture = Field("nb-lstm", description="Network variant (model.network.ARCHITECTURES).")
    epochs: int = Field(4, ge=1)
    embedding_dim: int = Field(64, ge=1)
    hidden_dim: int = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    patience: int = Field(2, ge=1, description="Early stopping: epochs without validation-loss improvement.")
    train_instance_count: int = Field(
        1, ge=1, description="Training instances, one torch DDP rank each: SageMaker instances (aws), local ranks."
    )

    # --- model (issue 14) ----------------------------------------------------------------------------
    tokenizer_version: Literal["words-neg-punct-2", "reference-bs4-porter-1"] = Field(
        "words-neg-punct-2",
        description="Preprocessing version (model.preprocessing.TOKENIZERS); reference-bs4-porter-1 = the notebook's.",
    )
    min_behaviour_pass_rate: float = Field(
        0.0, ge=0, le=1, description="Quality gate: least share of behavioural checks passed (0 = report only)."
    )

    # --- quality gate and serving --------------------------------------------------------------------
    min_accuracy: float = Field(0.85, ge=0, le=1)
    max_regression: float = Field(0.005, ge=0, le=1)
    parity_sample: int = Field(1000, ge=0)
    serve_host: str = Field(
        "127.0.0.1", description="Interface of local endpoint servers: loopback only (they have no authentication)."
    )
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
    notify_url: SecretStr | None = Field(None, description="Slack webhook, Apprise URL or any http(s) URL (a secret).")

    # --- aws -----------------------------------------------------------------------------------------
    aws_region: str = Field("us-east-1", pattern=_REGION)
    aws_bucket: str | None = Field(None, pattern=_BUCKET, description="S3 bucket for the aws artifact store.")
    aws_prefix: str = Field("sentiflow")
    aws_role_arn: str | None = Field(None, pattern=_ROLE_ARN, description="SageMaker execution role.")
    aws_lambda_role_arn: str | None = Field(None, pattern=_ROLE_ARN, description="Execution role of the API Lambda.")
    aws_train_instance_type: str = Field("ml.m5.xlarge", pattern=_INSTANCE)
    aws_train_instance_count: int | None = Field(
        None, ge=1, description="Older name of SENTIFLOW_TRAIN_INSTANCE_COUNT (still read, for both backends)."
    )
    aws_use_spot: bool = Field(False)
    aws_network_isolation: bool = Field(
        False,
        description="EnableNetworkIsolation on training jobs and models (no outbound network in the containers); "
        "the source bundle and model.tar.gz then carry the pinned wheels (see docs/aws.md).",
    )
    aws_transform_instance_type: str = Field("ml.m5.large", pattern=_INSTANCE)
    aws_endpoint_instance_type: str = Field("ml.m5.large", pattern=_INSTANCE)
    aws_framework_version: str = Field("2.5", pattern=_VERSION)
    aws_py_version: str = Field("py311", pattern=_PY_VERSION)
    aws_poll_seconds: float = Field(30, gt=0, description="How often to poll SageMaker job and endpoint status.")
    aws_max_runtime_s: int = Field(6 * 3600, ge=60, description="Training job stopping condition.")
    aws_credentials_block: str | None = Field(
        None, pattern=_BLOCK_NAME, description="Name of a prefect-aws AwsCredentials block."
    )
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

    @field_validator("data_url", mode="after")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        match = _URL_SCHEME.match(value.strip())
        if not value.strip() or (match and match.group(1).lower() not in DATA_SCHEMES):
            raise ValueError("unsupported data source")
        return value.strip()

    @field_serializer("data_url", when_used="json")
    def _redacted_data_url(self, value: str) -> str:
        return redact_url(value)  # JSON copies are shown or stored: no credentials in them

    @field_validator("serve_host", mode="after")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError("not an IP address or host name") from None
        if not is_loopback(value):
            raise ValueError(
                f"not a loopback address: sentiflow's endpoint servers have no authentication, so they bind "
                f"127.0.0.1 only; {OPEN_HOST_HINT}"
            )
        return value

    @field_validator("notify_url", mode="after")
    @classmethod
    def _has_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _URL_SCHEME.match(value.get_secret_value().strip()):
            raise ValueError("no scheme")
        return value

    # --- derived locations ---------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """Scratch copies that are safe to delete (unpacked models); never a cache of stage results."""
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

    def with_overrides(self, origin: str = "flag", **overrides: Any) -> Settings:
        """A copy with the non-None overrides applied and validated.

        ``origin`` names where the overrides came from in error messages: ``"flag"`` (``--max-len``) or
        ``"parameter"`` (flow parameter ``max_len``).
        """
        clean = {k: v for k, v in overrides.items() if v is not None}
        if not clean:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **clean})
        except ValidationError as error:
            raise settings_error(error, origin) from None


def get_settings(origin: str = "flag", **overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides on top (``origin`` as in ``with_overrides``).

    ConfigError (one line) when a ``SENTIFLOW_*`` variable, a ``.env`` entry or an override is invalid.
    """
    try:
        base = Settings()
    except ValidationError as error:
        raise settings_error(error, "env") from None
    except SettingsError as error:
        raise _parse_error(error) from None
    return base.with_overrides(origin, **overrides)


# --- one-line errors --------------------------------------------------------------------------------------


def setting_label(name: str, origin: str) -> str:
    """How the user wrote setting ``name``: ``SENTIFLOW_MAX_LEN``, ``--max-len`` or ``flow parameter max_len``."""
    if origin == "env":
        return f"{ENV_PREFIX}{name.upper()}"
    if origin == "flag":
        return f"--{name.replace('_', '-')}"
    return f"flow parameter {name}"


def accepts(name: str) -> str:
    """What setting ``name`` accepts, in words (``an integer ≥ 3``, ``one of local, aws``, …)."""
    field = Settings.model_fields[name]
    words = _ACCEPTS_BY_VALIDATOR.get(name) or _type_words(field.annotation)
    for item in field.metadata:
        pattern = getattr(item, "pattern", None)
        if pattern:
            words = _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
    bounds = [
        f"{symbol} {getattr(item, attr):g}"
        for item in field.metadata
        for attr, symbol, kind in (("ge", "≥", annotated_types.Ge), ("gt", ">", annotated_types.Gt),
                                   ("le", "≤", annotated_types.Le), ("lt", "<", annotated_types.Lt))
        if isinstance(item, kind)
    ]  # fmt: skip
    if bounds:
        words += " " + " and ".join(bounds)
    if _optional(field.annotation):
        words += " (or unset)"
    return words


def settings_error(error: ValidationError, origin: str) -> ConfigError:
    """One ConfigError line for every invalid value in ``error``, each named as the user wrote it."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item.get("loc") else "?"
        label = setting_label(name, origin)
        reason = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "string_pattern_mismatch":
            reason = "wrong format"
        if name in SECRET_FIELDS:
            problems.append(f"{label} is invalid ({reason}): it accepts {accepts(name)}")
        elif name in Settings.model_fields:
            shown = item.get("input")
            if name in URL_FIELDS and isinstance(shown, str):
                shown = redact_url(shown)
            problems.append(f"{label}={shown!r} is invalid ({reason}): it accepts {accepts(name)}")
        else:
            problems.append(f"{label}: {reason}")
    return ConfigError("; ".join(problems))


def _parse_error(error: SettingsError) -> ConfigError:
    """pydantic-settings' "error parsing value for field X" (JSON fields) as one line naming the variable."""
    match = re.search(r'field "([^"]+)"', str(error))
    name = match.group(1) if match else "?"
    if name not in Settings.model_fields:
        return ConfigError(f"a {ENV_PREFIX}* setting could not be parsed: {error}")
    return ConfigError(f"{setting_label(name, 'env')} could not be parsed: it accepts {accepts(name)}")


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, UnionType) and NoneType in get_args(annotation)


def _type_words(annotation: Any) -> str:
    if _optional(annotation):
        (annotation,) = [arg for arg in get_args(annotation) if arg is not NoneType]
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(value) for value in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is Path:
        return "a folder path"
    if get_origin(annotation) is dict:
        return 'a JSON object of names to numbers, e.g. {"ml.m5.large": 0.115}'
    return "text"
