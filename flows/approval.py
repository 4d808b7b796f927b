"""Human approval gate: pause the flow run until someone approves or rejects promotion in the Prefect UI.

The flow run goes to ``Paused``; the UI's *Resume* dialog shows ``evaluation_markdown`` and a form with
``approved`` / ``reviewer`` / ``note``. The flow process stays alive (holding its worker slot) while it waits.
From code: ``prefect.flow_runs.resume_flow_run(id, run_input={"approved": True, "reviewer": "me"})``.
"""

from __future__ import annotations

from prefect.input import RunInput

DEFAULT_TIMEOUT_S = 24 * 3600


class Approval(RunInput):
    """What the reviewer submits to resume a paused run."""

    approved: bool = False
    reviewer: str = ""
    note: str = ""


def request_approval(evaluation_markdown: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Pause the current flow run for a human decision; True only if a reviewer approved.

    Must be called inside a flow run. A run nobody resumes within ``timeout_s`` seconds counts as rejected.
    The decision (reviewer, note) is written to the run's log.
    """
    from prefect import get_run_logger
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    logger = get_run_logger()
    logger.info("waiting up to %d s for a reviewer to approve promotion (Resume in the Prefect UI)", timeout_s)
    try:
        decision = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=evaluation_markdown, approved=False),
            timeout=timeout_s,
        )
    except FlowPauseTimeout:
        logger.warning("no decision within %d s: promotion is rejected", timeout_s)
        return False
    verdict = "approved" if decision.approved else "rejected"
    logger.info(
        "promotion %s by %s%s",
        verdict,
        decision.reviewer or "an anonymous reviewer",
        f": {decision.note}" * bool(decision.note),
    )
    return bool(decision.approved)
