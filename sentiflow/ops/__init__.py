"""Operating sentiflow with Prefect: a local server, the work pool and worker, deployments, result storage,
failure notifications, automations, and the process set-up CLI commands need before running a flow (``runtime``).

Every module here imports Prefect lazily enough for ``sentiflow --help`` to stay fast; the names below are the
contract with ``prefect.yaml``. The event and run-label vocabulary the flows share lives in ``core.events``.
"""

from __future__ import annotations

WORK_POOL = "sentiflow-local"
"""The ``process`` work pool every deployment in ``prefect.yaml`` targets."""

RESULT_STORAGE_BLOCK = "sentiflow-results"
"""Name of the saved filesystem block (LocalFileSystem or S3Bucket) that holds persisted task results."""

NOTIFY_BLOCK = "sentiflow-notify"
"""Name of the notification block built from ``SENTIFLOW_NOTIFY_URL``."""

FAILURE_AUTOMATION = "sentiflow-notify-on-failure"
ZOMBIE_AUTOMATION = "sentiflow-crash-zombie-runs"

HEARTBEAT_SECONDS = 30
"""``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` for worker-run flows (the minimum Prefect accepts)."""
ZOMBIE_AFTER_SECONDS = 90
"""A running flow run that sent no heartbeat for this long is marked Crashed."""
