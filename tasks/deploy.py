"""The endpoint deployment stage: blue/green deploys, promotion, endpoint deletion and rollback.

Blue/green, as the pipeline wires it (all under the endpoints lock, :func:`endpoints_lock`)::

    already = serving_endpoint_task(model_uri, backend)                   # the API serves this model: done
    candidate = deploy_endpoint_task(model_uri, accuracy, backend)        # a NEW endpoint, InService (healthy)
    parity = parity_task(candidate.name, …)                               # tasks/parity.py, through it
    promote_endpoint_task(candidate, parity["passed"], backend)           # API → candidate, old ones drained

* Deploying is idempotent: when the API already serves an InService endpoint of the same model artifact, no new
  endpoint is started (a rerun with nothing changed changes nothing).
* Endpoint names carry the model version: ``sentiflow-v{version}-{shortid}``; every deployed model artifact
  has a version in the backend's model registry (``backends.base.ModelRegistry``: SQLite locally, SageMaker
  Model Registry on aws; the same artifact keeps its version).
* Promotion points the API at the candidate first, approves the version in the registry (Approved, live),
  waits ``drain_grace_s`` so requests that already picked the old target reach it, then drains and deletes the
  old endpoint(s).
* Anything failing before the switch (start, health, parity, the API update) deletes the candidate only: the
  old endpoint keeps serving and the API is untouched; a failed parity check also marks the version Rejected.
* ``rollback`` redeploys the registry's previous approved version the same blue/green way.

Every endpoint that is deployed or deleted emits a Prefect event (``sentiflow.endpoint.deployed`` /
``sentiflow.endpoint.deleted``, resource ``sentiflow.endpoint.<name>``, see ``core.events``); the idle-teardown
automation keys on them. Events are emitted inside Prefect runs, or outside when ``PREFECT_API_URL`` names a
server — never by spinning up a temporary server for a CLI call.

Plain functions do the work (the CLI calls them directly); the ``*_task`` wrappers are the Prefect stages.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from backends.base import ApiInfo, EndpointInfo, LogLine, get_backend, get_registry
from core.errors import SentiflowError
from core.events import DELETED_EVENT, DEPLOYED_EVENT, emit_endpoint_event
from core.io import file_lock
from tasks.policies import once_stage

if TYPE_CHECKING:
    from backends.base import Backend
    from core.config import Settings

NAME_PREFIX = "sentiflow-v"
DRAIN_GRACE_S = 1.0


def endpoint_name_for(version: int) -> str:
    """A fresh endpoint name for model ``version``: ``sentiflow-v{version}-{6 hex chars}``."""
    return f"{NAME_PREFIX}{version}-{uuid.uuid4().hex[:6]}"


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    """What a promotion did."""

    endpoint: EndpointInfo
    version: int
    api: ApiInfo | None
    replaced: tuple[str, ...] = ()  # old endpoints drained and deleted
    left_running: tuple[str, ...] = ()  # old endpoints that could not be deleted (see the log)
    rolled_back_from: int | None = None
    reused: bool = False  # the API already served this model: nothing was deployed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Deletion:
    """What deleting one endpoint did."""

    name: str
    api_cleared: bool
    endpoint: EndpointInfo | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backend(settings: Settings, backend: Backend | None) -> Backend:
    return backend if backend is not None else get_backend(settings)


@contextlib.contextmanager
def endpoints_lock(settings: Settings, log: LogLine) -> Iterator[None]:
    """One process at a time changes this SENTIFLOW_HOME's endpoints and API target (deploy → parity → promote,
    delete, rollback, teardown); a second one waits, saying for whom. Released by the kernel even on kill -9."""
    with file_lock(settings.state_dir / "endpoints.lock", "the endpoints of this SENTIFLOW_HOME", log):
        yield


def serving(settings: Settings, model_uri: str, backend: Backend | None = None) -> Promotion | None:
    """What the API serves when it already serves ``model_uri`` from an InService endpoint, else None."""
    backend = _backend(settings, backend)
    api = backend.api.current()
    if api is None or not api.endpoint_name:
        return None
    endpoint = backend.endpoints.get(api.endpoint_name)
    if endpoint is None or endpoint.status != "InService" or endpoint.model_uri != model_uri:
        return None
    return Promotion(endpoint=endpoint, version=endpoint.version, api=api, reused=True)


# --- the stage, as plain functions -------------------------------------------------------------------------


def deploy_candidate(
    settings: Settings,
    model_uri: str,
    log: LogLine,
    accuracy: float | None = None,
    backend: Backend | None = None,
) -> EndpointInfo:
    """Deploy ``model_uri`` to a NEW endpoint and return it once healthy; the API is not touched."""
    backend = _backend(settings, backend)
    model = get_registry(settings).register(model_uri, accuracy=accuracy)
    name = endpoint_name_for(model.version)
    log(f"deploying model v{model.version} to new endpoint {name}")
    endpoint = backend.endpoints.deploy(name, model_uri, model.version, log)
    emit_endpoint_event(DEPLOYED_EVENT, endpoint, backend.name)
    return endpoint


def delete_endpoint(
    settings: Settings,
    name: str,
    log: LogLine,
    backend: Backend | None = None,
    reason: str = "deleted",
) -> Deletion:
    """Delete endpoint ``name`` (draining in-flight requests); if the API pointed at it, clear the API first.

    With the API cleared it answers 503 "no model is deployed" instead of failing against a dying endpoint.
    """
    backend = _backend(settings, backend)
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        raise SentiflowError(
            f"no endpoint named {name!r} on the {backend.name} backend; see `sentiflow endpoints list`"
        )
    api_cleared = False
    current = backend.api.current()
    if current is not None and current.endpoint_name == name:
        clear = getattr(backend.api, "clear", None)
        if clear is not None:
            clear(log)
            api_cleared = True
        else:
            log(f"warning: the API still points at {name}; it will answer errors until the next deploy")
    backend.endpoints.delete(name)
    log(f"endpoint {name} deleted ({reason})")
    emit_endpoint_event(DELETED_EVENT, endpoint, backend.name, reason=reason, api_cleared=api_cleared)
    return Deletion(name=name, api_cleared=api_cleared, endpoint=endpoint)


def promote_candidate(
    settings: Settings,
    candidate: EndpointInfo,
    parity_ok: bool,
    log: LogLine,
    backend: Backend | None = None,
    drain_grace_s: float = DRAIN_GRACE_S,
    rolled_back_from: int | None = None,
) -> Promotion:
    """Switch the API to ``candidate`` and retire the old endpoint(s); or, if parity failed, discard it.

    Raises SentiflowError (after deleting the candidate) when parity failed or the API could not be switched;
    the previous endpoint then keeps serving.
    """
    backend = _backend(settings, backend)
    if not parity_ok:
        delete_endpoint(settings, candidate.name, log, backend, reason="parity check failed")
        reject_unless_live(settings, candidate.version, "serving parity check failed on the candidate endpoint", log)
        raise SentiflowError(
            f"endpoint {candidate.name} (model v{candidate.version}) failed the parity check and was "
            "deleted; "
            "the API still serves the previous model. Compare the batch-transform and endpoint predictions "
            "in the evaluation report"
        )
    live = backend.endpoints.get(candidate.name)
    if live is None or live.status != "InService":
        state = "is gone" if live is None else f"is {live.status}"
        raise SentiflowError(f"endpoint {candidate.name} {state}; redeploy the model (the API was not changed)")
    previous_api = backend.api.current()
    try:
        api = backend.api.point_to(live, log)
    except Exception as error:
        log(f"API update failed ({error}); deleting candidate {candidate.name}; the old endpoint keeps serving")
        try:
            delete_endpoint(settings, candidate.name, log, backend, reason="API update failed")
        except SentiflowError as cleanup_error:
            log(f"warning: could not delete {candidate.name}: {cleanup_error}")
        if isinstance(error, SentiflowError):
            raise
        raise SentiflowError(f"could not point the API at {candidate.name}: {error}") from error
    why = f"rolled back from v{rolled_back_from}" if rolled_back_from is not None else "promoted"
    get_registry(settings).approve(candidate.version, f"{why}: the API serves endpoint {candidate.name}")
    log(f"API now serves model v{candidate.version} on {candidate.name} ({api.url})")

    old = [
        endpoint.name
        for endpoint in backend.endpoints.list()
        if endpoint.name != candidate.name
        and endpoint.status not in ("Creating", "Deleting")
        and (
            endpoint.name.startswith(NAME_PREFIX)
            or (previous_api is not None and previous_api.endpoint_name == endpoint.name)
        )
    ]
    if old and drain_grace_s > 0:
        time.sleep(drain_grace_s)  # requests that read the old target just before the switch still reach it
    replaced: list[str] = []
    left: list[str] = []
    for name in old:
        try:
            delete_endpoint(settings, name, log, backend, reason=f"replaced by {candidate.name}")
            replaced.append(name)
        except Exception as error:  # noqa: BLE001 - the promotion stands; report the leftover
            log(
                f"warning: old endpoint {name} could not be deleted ({error}); delete it with "
                f"`sentiflow endpoints delete {name}`"
            )
            left.append(name)
    return Promotion(
        endpoint=live,
        version=candidate.version,
        api=api,
        replaced=tuple(replaced),
        left_running=tuple(left),
        rolled_back_from=rolled_back_from,
    )


def reject_unless_live(settings: Settings, version: int, reason: str, log: LogLine) -> bool:
    """Mark model ``version`` Rejected in the registry, unless it is the live one (the API serves it: it stays
    Approved). Returns whether it was rejected."""
    registry = get_registry(settings)
    live = registry.live()
    if live is not None and live.version == version:
        log(f"model v{version} is the live model: it stays Approved ({reason})")
        return False
    registry.reject(version, reason)
    log(f"model v{version} marked Rejected in the model registry: {reason}")
    return True


def blue_green_deploy(
    settings: Settings,
    model_uri: str,
    log: LogLine,
    accuracy: float | None = None,
    parity_check: Callable[[EndpointInfo], bool] | None = None,
    backend: Backend | None = None,
    drain_grace_s: float = DRAIN_GRACE_S,
    rolled_back_from: int | None = None,
) -> Promotion:
    """The whole stage in one call: new endpoint → healthy → ``parity_check`` (if given) → promote."""
    backend = _backend(settings, backend)
    candidate = deploy_candidate(settings, model_uri, log, accuracy, backend)
    try:
        parity_ok = True if parity_check is None else bool(parity_check(candidate))
    except BaseException:
        delete_endpoint(settings, candidate.name, log, backend, reason="parity check crashed")
        raise
    return promote_candidate(
        settings,
        candidate,
        parity_ok,
        log,
        backend,
        drain_grace_s=drain_grace_s,
        rolled_back_from=rolled_back_from,
    )


def rollback(
    settings: Settings, log: LogLine, backend: Backend | None = None, drain_grace_s: float = DRAIN_GRACE_S
) -> Promotion:
    """Redeploy the registry's previous approved model version blue/green and point the API at it."""
    registry = get_registry(settings)
    current = registry.live()
    if current is None:
        where = f"this SENTIFLOW_HOME ({settings.home})" if settings.backend == "local" else "the model registry"
        raise SentiflowError(f"nothing to roll back: no model was ever promoted in {where}; run the pipeline first")
    previous = registry.previous_approved(current.version)
    if previous is None:
        raise SentiflowError(
            f"nothing to roll back to: model v{current.version} is the oldest promoted, approved version "
            "(see `sentiflow models list`)"
        )
    log(f"rolling back from model v{current.version} to v{previous.version} ({previous.model_uri})")
    return blue_green_deploy(
        settings,
        previous.model_uri,
        log,
        backend=backend,
        drain_grace_s=drain_grace_s,
        rolled_back_from=current.version,
    )


# --- Prefect tasks ------------------------------------------------------------------------------------------


def _task_log() -> LogLine:
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    return lambda line: logger.info("%s", line)


def _settings(backend: str) -> Settings:
    from core.config import get_settings

    return get_settings("parameter", backend=backend)


@task(**once_stage("deployed-model"), cache_policy=NO_CACHE)
def deployed_model_task(backend: str) -> dict[str, Any] | None:
    """The registry's live model version (what the quality gate compares against), or None."""
    current = get_registry(_settings(backend)).live()
    return None if current is None else current.to_dict()


@task(**once_stage("serving-endpoint"), cache_policy=NO_CACHE)
def serving_endpoint_task(model_uri: str, backend: str) -> Promotion | None:
    """The promotion that already serves ``model_uri`` behind the API (a rerun deploys nothing), or None."""
    found = serving(_settings(backend), model_uri)
    if found is not None:
        _task_log()(f"the API already serves {model_uri} on {found.endpoint.name}: nothing to deploy")
    return found


@task(**once_stage("deploy-endpoint"), cache_policy=NO_CACHE)
def deploy_endpoint_task(model_uri: str, accuracy: float | None, backend: str) -> EndpointInfo:
    """Deploy the model to a new endpoint and wait until it is healthy (the API is not changed yet)."""
    return deploy_candidate(_settings(backend), model_uri, _task_log(), accuracy)


@task(**once_stage("promote-endpoint"), cache_policy=NO_CACHE)
def promote_endpoint_task(candidate: EndpointInfo, parity_ok: bool, backend: str) -> Promotion:
    """Point the API at the candidate, then drain and delete the old endpoint(s); bad parity discards it."""
    return promote_candidate(_settings(backend), candidate, parity_ok, _task_log())


@task(**once_stage("delete-endpoint"), cache_policy=NO_CACHE)
def delete_endpoint_task(name: str, reason: str, backend: str) -> Deletion:
    """Delete one endpoint (clearing the API first if it points there)."""
    return delete_endpoint(_settings(backend), name, _task_log(), reason=reason)
