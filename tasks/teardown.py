"""The idle-endpoint teardown stage: find endpoints nobody calls (or that are too old), delete them, report.

* An endpoint is a candidate when it had no invocation for ``idle_minutes`` (its last invocation, else its
  creation) or is older than ``max_age_hours`` — the backend decides (``EndpointManager.teardown_candidates``)
  and says what deleting it saves (local: the process and its memory; aws: instance-hours × the hourly price).
* Deleting goes through :func:`tasks.deploy.delete_endpoint`: the endpoint drains, a
  ``sentiflow.endpoint.deleted`` event is emitted, and if the API pointed at it the API is cleared first — it
  then answers 503 "no model is deployed".
* Model artifacts stay in the store, so bringing the model back is one command (``sentiflow rollback`` after a
  newer deploy, or the pipeline's deploy stage).
* ``dry_run`` reports what would go and deletes nothing.

Plain functions do the work (the CLI calls :func:`run_teardown`); ``*_task`` wrappers are the Prefect stages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from backends.base import LogLine, TeardownDecision, get_backend
from core.events import endpoint_from_resource
from tasks.deploy import delete_endpoint
from tasks.policies import local_stage, once_stage

if TYPE_CHECKING:
    from backends.base import Backend
    from core.config import Settings

ARTIFACT_KEY = "endpoint-teardown"


@dataclass(frozen=True)
class TeardownItem:
    """One endpoint the teardown chose, and what happened to it."""

    name: str
    version: int
    model_uri: str
    reason: str  # "idle" | "max-age"
    idle_minutes: float | None
    age_hours: float
    saved: str
    deleted: bool
    api_cleared: bool = False
    error: str | None = None
    rss_bytes: int = 0
    processes: int = 0
    usd_per_hour: float | None = None


@dataclass(frozen=True)
class TeardownReport:
    """What a teardown deleted (or, in a dry run, would delete) and what that saves."""

    backend: str
    dry_run: bool
    idle_minutes: float
    max_age_hours: float | None
    endpoint_filter: str | None = None
    items: list[TeardownItem] = field(default_factory=list)

    @property
    def deleted(self) -> list[str]:
        return [item.name for item in self.items if item.deleted]

    @property
    def api_cleared(self) -> bool:
        return any(item.api_cleared for item in self.items)

    def savings(self) -> str:
        """A one-line total: processes and memory freed, and/or USD per hour saved."""
        chosen = [item for item in self.items if item.deleted or self.dry_run]
        if not chosen:
            return "nothing"
        parts = []
        processes = sum(item.processes for item in chosen)
        rss = sum(item.rss_bytes for item in chosen)
        if processes or rss:
            parts.append(f"{processes} process(es), {rss / (1 << 20):.0f} MiB RSS")
        usd = [item.usd_per_hour for item in chosen if item.usd_per_hour is not None]
        if usd:
            hourly = sum(usd)
            parts.append(f"${hourly:.3f}/hour (${hourly * 24:.2f}/day, ${hourly * 24 * 30:.2f}/month)")
        return "; ".join(parts) or f"{len(chosen)} endpoint(s)"

    def summary(self) -> str:
        """A human sentence for logs and the CLI."""
        verb = "would delete" if self.dry_run else "deleted"
        if not self.items:
            scope = f"endpoint {self.endpoint_filter}" if self.endpoint_filter else "no endpoint"
            what = "is not idle" if self.endpoint_filter else "is idle"
            limit = f"idle ≥ {self.idle_minutes:g} min"
            if self.max_age_hours is not None:
                limit += f" or older than {self.max_age_hours:g} h"
            return f"teardown: {scope} {what} ({limit}); nothing to do"
        names = ", ".join(item.name for item in self.items if item.deleted or self.dry_run) or "none"
        text = f"teardown ({self.backend}): {verb} {names}; saves {self.savings()}"
        failed = [item for item in self.items if item.error]
        if failed:
            text += "; failed: " + ", ".join(f"{item.name} ({item.error})" for item in failed)
        if self.api_cleared:
            text += "; the API now answers 503 until the next deploy"
        return text

    def rows(self) -> list[dict[str, Any]]:
        """Table rows (for the Prefect table artifact and the CLI)."""
        return [
            {
                "endpoint": item.name,
                "version": item.version,
                "reason": item.reason,
                "idle_min": item.idle_minutes,
                "age_h": item.age_hours,
                "saves": item.saved,
                "action": "would delete" if self.dry_run else ("deleted" if item.deleted else "FAILED"),
            }
            for item in self.items
        ]

    def markdown(self) -> str:
        lines = [f"# Endpoint teardown{' (dry run)' if self.dry_run else ''}", "", self.summary(), ""]
        if self.items:
            lines += [
                "| endpoint | version | reason | idle (min) | age (h) | saves | action |",
                "|---" * 7 + "|",
            ]
            for row in self.rows():
                lines.append("| " + " | ".join(str(value) for value in row.values()) + " |")
            lines += ["", "Model artifacts were kept: a redeploy is one command."]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(deleted=self.deleted, api_cleared=self.api_cleared, savings=self.savings())
        return data


def _backend(settings: Settings, backend: Backend | None) -> Backend:
    return backend if backend is not None else get_backend(settings)


def find_candidates(
    settings: Settings,
    idle_minutes: float | None = None,
    max_age_hours: float | None = None,
    endpoint: str | None = None,
    backend: Backend | None = None,
) -> list[TeardownDecision]:
    """The backend's teardown candidates (defaults from the settings), optionally only ``endpoint``.

    ``endpoint`` may be a plain name or the ``sentiflow.endpoint.<name>`` resource id of an event trigger.
    """
    backend = _backend(settings, backend)
    idle = settings.idle_minutes if idle_minutes is None else idle_minutes
    max_age = settings.max_age_hours if max_age_hours is None else max_age_hours
    decisions = backend.endpoints.teardown_candidates(idle, max_age)
    if endpoint:
        name = endpoint_from_resource(endpoint)
        decisions = [decision for decision in decisions if decision.endpoint.name == name]
    return decisions


def _usd_per_hour(settings: Settings, decision: TeardownDecision) -> float | None:
    """The endpoint's hourly price: ``extra["usd_per_hour"]``, else instances × the price table entry."""
    extra = decision.endpoint.extra or {}
    if extra.get("usd_per_hour") is not None:
        return float(extra["usd_per_hour"])
    price = settings.instance_prices_usd.get(decision.endpoint.instance_type or "")
    if price is None:
        return None
    variants = extra.get("variants") or []
    instances = sum(int(v.get("instances") or 0) for v in variants if isinstance(v, dict)) or 1
    return price * instances


def _item(
    settings: Settings,
    decision: TeardownDecision,
    deleted: bool,
    api_cleared: bool = False,
    error: str | None = None,
) -> TeardownItem:
    extra = decision.endpoint.extra or {}
    usd = _usd_per_hour(settings, decision)
    return TeardownItem(
        name=decision.endpoint.name,
        version=decision.endpoint.version,
        model_uri=decision.endpoint.model_uri,
        reason=decision.reason,
        idle_minutes=decision.idle_minutes,
        age_hours=decision.age_hours,
        saved=decision.saved,
        deleted=deleted,
        api_cleared=api_cleared,
        error=error,
        rss_bytes=int(extra.get("rss_bytes") or 0),
        processes=int(extra.get("processes") or 0),
        usd_per_hour=float(usd) if usd is not None else None,
    )


def teardown(
    settings: Settings,
    decisions: list[TeardownDecision],
    dry_run: bool,
    log: LogLine,
    idle_minutes: float | None = None,
    max_age_hours: float | None = None,
    endpoint: str | None = None,
    backend: Backend | None = None,
) -> TeardownReport:
    """Delete the endpoints of ``decisions`` (none in a dry run) and report; failures do not stop the rest."""
    backend = _backend(settings, backend)
    items: list[TeardownItem] = []
    for decision in decisions:
        name = decision.endpoint.name
        why = f"{decision.reason}: idle {decision.idle_minutes} min, age {decision.age_hours} h"
        if dry_run:
            log(f"dry run: would delete {name} ({why}); saves {decision.saved}")
            items.append(_item(settings, decision, deleted=False))
            continue
        try:
            deletion = delete_endpoint(settings, name, log, backend, reason=f"teardown ({decision.reason})")
        except Exception as error:  # noqa: BLE001 - report it and carry on with the others
            log(f"warning: could not delete {name}: {error}")
            items.append(_item(settings, decision, deleted=False, error=str(error)))
            continue
        log(f"deleted {name} ({why}); saves {decision.saved}")
        items.append(_item(settings, decision, deleted=True, api_cleared=deletion.api_cleared))
    report = TeardownReport(
        backend=backend.name,
        dry_run=dry_run,
        idle_minutes=settings.idle_minutes if idle_minutes is None else idle_minutes,
        max_age_hours=settings.max_age_hours if max_age_hours is None else max_age_hours,
        endpoint_filter=endpoint_from_resource(endpoint) if endpoint else None,
        items=items,
    )
    log(report.summary())
    return report


def run_teardown(
    settings: Settings,
    log: LogLine,
    idle_minutes: float | None = None,
    max_age_hours: float | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
    backend: Backend | None = None,
) -> TeardownReport:
    """Find and delete idle/old endpoints in one call (what ``sentiflow teardown`` runs)."""
    backend = _backend(settings, backend)
    decisions = find_candidates(settings, idle_minutes, max_age_hours, endpoint, backend)
    return teardown(settings, decisions, dry_run, log, idle_minutes, max_age_hours, endpoint, backend)


def publish_report(report: TeardownReport) -> None:
    """The report as Prefect artifacts: a table of endpoints and a markdown summary."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    description = report.summary()
    if report.items:
        create_table_artifact(key=ARTIFACT_KEY, table=report.rows(), description=description)
    create_markdown_artifact(key=f"{ARTIFACT_KEY}-summary", markdown=report.markdown(), description=description)


# --- Prefect tasks ------------------------------------------------------------------------------------------


def _task_log() -> LogLine:
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    return lambda line: logger.info("%s", line)


def _settings(backend: str) -> Settings:
    from core.config import get_settings

    return get_settings("parameter", backend=backend)


@task(**local_stage("find-idle-endpoints"), cache_policy=NO_CACHE)
def find_candidates_task(
    idle_minutes: float | None, max_age_hours: float | None, endpoint: str | None, backend: str
) -> list[TeardownDecision]:
    """Endpoints idle for ``idle_minutes`` or older than ``max_age_hours`` (optionally one endpoint)."""
    decisions = find_candidates(_settings(backend), idle_minutes, max_age_hours, endpoint)
    _task_log()(f"teardown: {len(decisions)} candidate endpoint(s)")
    return decisions


@task(**once_stage("delete-idle-endpoints"), cache_policy=NO_CACHE)
def teardown_task(
    decisions: list[TeardownDecision],
    dry_run: bool,
    idle_minutes: float | None,
    max_age_hours: float | None,
    endpoint: str | None,
    backend: str,
) -> TeardownReport:
    """Delete the chosen endpoints (nothing in a dry run), clearing the API if its endpoint goes."""
    return teardown(_settings(backend), decisions, dry_run, _task_log(), idle_minutes, max_age_hours, endpoint)


@task(**local_stage("publish-teardown-report"), cache_policy=NO_CACHE)
def publish_report_task(report: TeardownReport) -> None:
    """Attach the teardown report to the flow run (table + markdown artifacts)."""
    publish_report(report)
