"""boto3 session and clients for the aws backend: one place that decides credentials, region and endpoints.

Credentials come from the standard boto3 chain (environment, shared config/credentials files, SSO, instance or
container role) or, when ``settings.aws_credentials_block`` names one, from a prefect-aws ``AwsCredentials``
block (its ``AwsClientParameters`` — e.g. ``endpoint_url`` for an S3-compatible store — apply to every client
made from it). The region is ``settings.aws_region`` unless the block sets its own. Endpoint overrides in the
environment (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``) are honoured by botocore itself; tests
point them at moto.

Nothing here logs or stores secrets. boto3 is imported lazily so that ``import backends.aws`` stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, SentiflowError

if TYPE_CHECKING:
    import boto3

    from core.config import Settings

USER_AGENT = "sentiflow"


class AwsClients:
    """Lazily created, cached boto3 clients sharing one session.

    ``hooks`` are ``(event_name, handler)`` pairs registered on every client this object creates (botocore
    events, e.g. ``"before-call.sagemaker.CreateTrainingJob"``); they exist for tests and diagnostics.
    """

    def __init__(self, settings: Settings, hooks: list[tuple[str, Callable[..., Any]]] | None = None) -> None:
        self.settings = settings
        self.hooks = list(hooks or [])
        self._session: boto3.Session | None = None
        self._params: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- session --------------------------------------------------------------------------------------
    @property
    def session(self) -> boto3.Session:
        """The boto3 session (from the credentials block, else the default chain)."""
        if self._session is None:
            self._session, self._params = self._make_session()
        return self._session

    @property
    def region(self) -> str:
        return self.session.region_name or self.settings.aws_region

    def _make_session(self) -> tuple[boto3.Session, dict[str, Any]]:
        import boto3

        block_name = self.settings.aws_credentials_block
        if not block_name:
            return boto3.Session(region_name=self.settings.aws_region), {}
        try:
            from prefect_aws import AwsCredentials

            block = AwsCredentials.load(block_name, _sync=True)
        except ValueError as error:
            raise ConfigError(
                f"prefect-aws AwsCredentials block {block_name!r} (SENTIFLOW_AWS_CREDENTIALS_BLOCK) not "
                f"found: {error}; create it (`prefect block register -m prefect_aws`, then the UI or "
                "AwsCredentials(...).save(name)) or unset the setting to use the default AWS credential chain"
            ) from error
        if not block.region_name:
            block = block.model_copy(update={"region_name": self.settings.aws_region})
        params = block.aws_client_parameters.get_params_override()
        return block.get_boto3_session(), params

    # --- clients --------------------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` (``"s3"``, ``"sagemaker"``, ``"lambda"``, ...)."""
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                session = self.session
                params = dict(self._params)
                config = Config(user_agent_extra=USER_AGENT)
                if "config" in params:
                    config = params.pop("config").merge(config)
                client = session.client(service, region_name=self.region, config=config, **params)
                for event, handler in self.hooks:
                    client.meta.events.register(event, handler)
                self._clients[service] = client
            return self._clients[service]

    def account_id_from_arn(self, arn: str) -> str:
        """The account id inside an ARN (avoids an STS round trip)."""
        parts = arn.split(":")
        if len(parts) < 6 or not parts[4]:
            raise SentiflowError(f"cannot read the account id from ARN {arn!r}")
        return parts[4]


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(error)


@contextmanager
def aws_errors(action: str, hint: str = "") -> Iterator[None]:
    """Turn botocore errors that the user must act on (auth, permissions, validation) into SentiflowError.

    Other errors (throttling, 5xx, connection resets) propagate unchanged so Prefect's retry policy can
    retry them.
    """
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, ParamValidationError

    user_codes = {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "ValidationException",
        "ResourceLimitExceeded",
        "NoSuchBucket",
        "InvalidParameterValueException",
        "ResourceNotFoundException",
    }
    suffix = f"; {hint}" if hint else ""
    try:
        yield
    except NoCredentialsError as error:
        raise ConfigError(
            f"{action}: no AWS credentials found ({error}); configure the standard chain (AWS_PROFILE, "
            "~/.aws/credentials, SSO, an instance role) or set SENTIFLOW_AWS_CREDENTIALS_BLOCK"
        ) from error
    except NoRegionError as error:
        raise ConfigError(f"{action}: no AWS region; set SENTIFLOW_AWS_REGION") from error
    except ParamValidationError as error:
        raise SentiflowError(f"{action}: invalid request: {error}{suffix}") from error
    except ClientError as error:
        code = error_code(error)
        if code in user_codes:
            raise SentiflowError(f"{action} failed: {code}: {error_message(error)}{suffix}") from error
        raise
