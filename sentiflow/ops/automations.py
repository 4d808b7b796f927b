"""The automations ``sentiflow prefect deploy`` keeps in place (created or updated by name, never duplicated).

- ``sentiflow-notify-on-failure``: a flow run enters Failed, Crashed or TimedOut → a notification through the
  ``SENTIFLOW_NOTIFY_URL`` block naming flow, deployment, run, failed task, error and the run's UI link.
- ``sentiflow-crash-zombie-runs``: a running flow run that stops sending heartbeats (its machine or process
  died) is marked Crashed — which in turn fires the failure notification. Worker-run flows send a heartbeat
  every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (30 s, set in ``prefect.yaml``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from sentiflow.ops import FAILURE_AUTOMATION, ZOMBIE_AFTER_SECONDS, ZOMBIE_AUTOMATION
from sentiflow.ops.notifications import FAILURE_BODY, FAILURE_SUBJECT

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

FAILURE_EVENTS = frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"})
"""Flow-run state events that mean the run failed."""

HEARTBEAT_SATISFIED_BY = frozenset(
    {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Cancelling",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
        "prefect.flow-run.Paused",
        "prefect.flow-run.Suspended",
    }
)
"""Events that show a flow run is alive or legitimately stopped heartbeating."""


def failure_automation(block_document_id: UUID, name: str = FAILURE_AUTOMATION) -> AutomationCore:
    """Automation: any flow run entering Failed/Crashed/TimedOut → notification through the given block."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=name,
        description="sentiflow: notify SENTIFLOW_NOTIFY_URL when a flow run fails, crashes or times out.",
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            expect=set(FAILURE_EVENTS),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=FAILURE_SUBJECT, body=FAILURE_BODY)],
    )


def zombie_automation(after_seconds: int = ZOMBIE_AFTER_SECONDS, name: str = ZOMBIE_AUTOMATION) -> AutomationCore:
    """Automation: no heartbeat (nor terminal/paused state) within ``after_seconds`` of the last → Crashed."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=name,
        description=(
            f"sentiflow: mark a flow run Crashed when it sent no heartbeat for {after_seconds} s "
            "(its process or machine died)."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect=set(HEARTBEAT_SATISFIED_BY),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {after_seconds} s: the flow-run process or its machine died.",
            )
        ],
    )


def upsert_automation(automation: AutomationCore) -> UUID:
    """Create ``automation`` or update the one with the same name (extra duplicates are deleted)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            return client.create_automation(automation)
        keep, *duplicates = existing
        for duplicate in duplicates:
            client.delete_automation(duplicate.id)
        client.update_automation(keep.id, automation)
        return keep.id


def delete_automation(name: str) -> int:
    """Delete every automation called ``name``; returns how many there were."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        for automation in existing:
            client.delete_automation(automation.id)
        return len(existing)
