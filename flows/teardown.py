"""The idle-endpoint teardown flow: run it on a schedule, or from the ``sentiflow.endpoint.deployed`` trigger.

``teardown_idle_endpoints`` deletes endpoints with no invocation for ``idle_minutes`` (the endpoint's own ``/stats``
locally, CloudWatch ``Invocations`` on aws) or older than
``max_age_hours`` (defaults: ``SENTIFLOW_IDLE_MINUTES``, ``SENTIFLOW_MAX_AGE_HOURS``), keeps the model
artifacts, clears the API if its endpoint went (the API then answers 503) and reports what it deleted and what
that saves.
``endpoint`` limits it to one endpoint — a plain name or the ``sentiflow.endpoint.<name>`` resource id that an
event trigger passes as ``{{ event.resource.id }}``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from core.config import get_settings
from tasks.deploy import endpoints_lock
from tasks.teardown import find_candidates_task, publish_report_task, teardown_task


@flow(name="sentiflow-teardown", log_prints=True)
def teardown_idle_endpoints(
    idle_minutes: float | None = None,
    max_age_hours: float | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Delete idle or too-old endpoints (nothing with ``dry_run``) and report the savings."""
    settings = get_settings("parameter", backend=backend)
    with endpoints_lock(settings, print):
        decisions = find_candidates_task(idle_minutes, max_age_hours, endpoint, settings.backend)
        report = teardown_task(decisions, dry_run, idle_minutes, max_age_hours, endpoint, settings.backend)
    publish_report_task(report)
    return report.to_dict()
