"""Endpoint events for the event-driven idle teardown.

The deploy stage emits ``sentiflow.endpoint.deployed`` / ``.deleted``; whatever serves an endpoint should call
:meth:`InvocationEvents.invoked` on each request so the proactive trigger in ``prefect.yaml`` (no
``sentiflow.endpoint.invoked`` within the idle window → teardown) sees the endpoint is in use. Emission is
throttled per endpoint (default: at most one event a minute), only happens when a Prefect API is configured,
and never raises into the caller.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

INVOKED_EVENT = "sentiflow.endpoint.invoked"
RESOURCE_PREFIX = "sentiflow.endpoint."

_log = logging.getLogger(__name__)


def endpoint_resource_id(name: str) -> str:
    """``sentiflow.endpoint.<name>`` for a plain endpoint name (a resource id is returned unchanged)."""
    return name if name.startswith(RESOURCE_PREFIX) else f"{RESOURCE_PREFIX}{name}"


class InvocationEvents:
    """Throttled ``sentiflow.endpoint.invoked`` emitter; thread-safe, one instance per serving process."""

    def __init__(self, min_interval_s: float = 60.0, enabled: bool | None = None) -> None:
        """``enabled`` defaults to "a Prefect API is configured" (``PREFECT_API_URL`` set)."""
        self.min_interval_s = min_interval_s
        self.enabled = bool(os.environ.get("PREFECT_API_URL")) if enabled is None else enabled
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def invoked(self, endpoint: str, payload: dict[str, Any] | None = None) -> bool:
        """Record one invocation of ``endpoint``; True when an event was emitted (not throttled/disabled)."""
        if not self.enabled:
            return False
        resource_id = endpoint_resource_id(endpoint)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(resource_id)
            if last is not None and now - last < self.min_interval_s:
                return False
            self._last[resource_id] = now
        try:
            from prefect.events import emit_event

            emit_event(
                INVOKED_EVENT,
                resource={
                    "prefect.resource.id": resource_id,
                    "prefect.resource.name": resource_id.removeprefix(RESOURCE_PREFIX),
                },
                payload=payload or {},
            )
        except Exception as exc:  # serving must never fail because Prefect is unreachable
            _log.warning("could not emit %s for %s: %s", INVOKED_EVENT, resource_id, exc)
            return False
        return True
