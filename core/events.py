"""sentiflow's one event and label vocabulary: endpoint events, their resource ids, the emitter, run labels.

- ``sentiflow.endpoint.deployed`` / ``.deleted``: emitted by the deploy stage (:func:`emit_endpoint_event`) on
  resource ``sentiflow.endpoint.<name>``. The proactive trigger in ``prefect.yaml`` keys on them: an endpoint
  deployed and not deleted within its idle window gets a teardown run for it, which checks whether it was used
  (the endpoint's own ``/stats`` locally, CloudWatch ``Invocations`` on aws). Endpoint servers emit nothing:
  they know nothing of Prefect.
- ``sentiflow.failed-task`` / ``sentiflow.failed-error``: flow-run labels set by
  ``tasks.policies.report_task_failure`` and read by the failure notification (``sentiflow.ops.notifications``).

Events are emitted only inside Prefect runs or when a Prefect API is configured — never by spinning up a
temporary server — and never raise into the caller. Prefect is imported lazily.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

DEPLOYED_EVENT = "sentiflow.endpoint.deployed"
DELETED_EVENT = "sentiflow.endpoint.deleted"
RESOURCE_PREFIX = "sentiflow.endpoint."

FAILED_TASK_LABEL = "sentiflow.failed-task"
"""Flow-run label set by ``tasks.policies.report_task_failure``: the name of the task run that failed."""
FAILED_ERROR_LABEL = "sentiflow.failed-error"
"""Flow-run label set by ``tasks.policies.report_task_failure``: ``ExceptionType: message`` (truncated)."""

_log = logging.getLogger(__name__)


class Endpoint(Protocol):
    """What an endpoint event describes (``backends.base.EndpointInfo`` has these fields)."""

    name: str
    model_uri: str
    version: int
    url: str | None
    instance_type: str | None
    created_at: str | None


# --- resource ids -------------------------------------------------------------------------------------------


def resource_id(name: str) -> str:
    """The Prefect event resource id of endpoint ``name``."""
    return f"{RESOURCE_PREFIX}{name}"


def endpoint_resource_id(name: str) -> str:
    """``sentiflow.endpoint.<name>`` for a plain endpoint name (a resource id is returned unchanged)."""
    return name if name.startswith(RESOURCE_PREFIX) else resource_id(name)


def endpoint_from_resource(value: str) -> str:
    """An endpoint name from either a plain name or a ``sentiflow.endpoint.<name>`` resource id."""
    value = value.strip()
    return value[len(RESOURCE_PREFIX) :] if value.startswith(RESOURCE_PREFIX) else value


# --- the emitter -------------------------------------------------------------------------------------------


def _events_enabled() -> bool:
    """Emit inside a Prefect run, or when a Prefect API is configured (never start an ephemeral server)."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.settings import get_current_settings

        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            return True
        return bool(get_current_settings().api.url)
    except Exception:  # noqa: BLE001 - events are best effort
        return False


def emit_endpoint_event(event: str, endpoint: Endpoint, backend: str, **payload: Any) -> None:
    """Emit ``event`` for ``endpoint`` (best effort: a failure is logged, never raised)."""
    if not _events_enabled():
        return
    try:
        from prefect.events import emit_event

        emit_event(
            event=event,
            resource={
                "prefect.resource.id": resource_id(endpoint.name),
                "prefect.resource.name": endpoint.name,
                "sentiflow.backend": backend,
            },
            payload={
                "name": endpoint.name,
                "backend": backend,
                "model_uri": endpoint.model_uri,
                "version": endpoint.version,
                "url": endpoint.url,
                "instance_type": endpoint.instance_type,
                "created_at": endpoint.created_at,
                **payload,
            },
        )
    except Exception as error:  # noqa: BLE001 - an event must never fail a deploy
        _log.warning("could not emit %s for endpoint %s: %s", event, endpoint.name, error)
