"""Human approval gate: pause the flow run until someone approves or rejects promotion in the Prefect UI.

The flow run goes to ``Paused``; the UI's *Resume* dialog shows ``evaluation_markdown`` and a form with
``approved`` / ``reviewer`` / ``note``. The flow process stays alive (holding its worker slot) while it waits.
From code: ``prefect.flow_runs.resume_flow_run(id, run_input={"approved": True, "reviewer": "me"})``.

:func:`review_model` is the pipeline's step: a rejection (or no decision in time) marks the model version
Rejected in the backend's model registry — on aws the model package's ``ModelApprovalStatus``, what SageMaker
Studio's Model Registry shows; an approval lets the deploy stage promote it (Approved there).
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
    return ask_reviewer(evaluation_markdown, timeout_s).approved


def review_model(version: int, evaluation_markdown: str, backend: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Pause for a reviewer's decision on model ``version``; a rejection marks it Rejected in the registry."""
    from tasks.gate import reject_model_task

    decision = ask_reviewer(evaluation_markdown, timeout_s)
    if not decision.approved:
        who = decision.reviewer or "an anonymous reviewer"
        reason = f"rejected by {who}" + (f": {decision.note}" if decision.note else "")
        reject_model_task(version, reason[:1000], backend)
    return decision.approved


def ask_reviewer(evaluation_markdown: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> Approval:
    """The reviewer's :class:`Approval` (``approved=False``, note "no decision", when nobody resumed in time)."""
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
        return Approval(approved=False, reviewer="", note=f"no decision within {timeout_s} s")
    verdict = "approved" if decision.approved else "rejected"
    logger.info(
        "promotion %s by %s%s",
        verdict,
        decision.reviewer or "an anonymous reviewer",
        f": {decision.note}" * bool(decision.note),
    )
    return decision
