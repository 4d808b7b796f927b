"""``sentiflow prefect deploy``: work pool, result storage, deployments, notification block and automations.

Everything is idempotent — run it again after changing ``prefect.yaml`` or settings and it updates in place —
and goes to whatever Prefect API ``PREFECT_API_URL`` names (or the server ``sentiflow prefect server``
started).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from core.config import Settings
from core.errors import ConfigError, SentiflowError
from sentiflow.ops import (
    FAILURE_AUTOMATION,
    HEARTBEAT_SECONDS,
    WORK_POOL,
    ZOMBIE_AFTER_SECONDS,
    ZOMBIE_AUTOMATION,
)
from sentiflow.ops.server import (
    client_env,
    prefect_home,
    resolve_api_url,
    run_prefect,
    ui_url_for,
)

PREFECT_FILE = "prefect.yaml"
MIN_PROACTIVE_SECONDS = 10
DEPLOY_TIMEOUT_SECONDS = 300


@dataclass
class DeployReport:
    """What ``deploy_all`` created or updated."""

    api_url: str
    ui_url: str
    work_pool: str
    pool_created: bool
    result_storage: str
    deployments: list[str] = field(default_factory=list)
    notify_block_id: UUID | None = None
    automations: dict[str, UUID] = field(default_factory=dict)
    removed_automations: list[str] = field(default_factory=list)


@contextlib.contextmanager
def use_api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at ``api_url`` for the duration of the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding ``prefect.yaml``: ``start`` / the working directory, else the source checkout."""
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parents[2]]
    for candidate in candidates:
        if (candidate / PREFECT_FILE).is_file():
            return candidate
    raise ConfigError(
        f"no {PREFECT_FILE} in {candidates[0]} nor in {candidates[1]}; run from the sentiflow project folder "
        "or pass --project-dir"
    )


def idle_seconds(settings: Settings) -> int:
    """The proactive idle-teardown window in seconds (Prefect requires at least 10 s)."""
    return max(MIN_PROACTIVE_SECONDS, math.ceil(settings.idle_minutes * 60))


IDLE_TRIGGER_EVENT = "sentiflow.endpoint.deployed"


def render_prefect_file(settings: Settings, source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` with settings applied that env templating cannot express.

    The idle-teardown trigger (``after: sentiflow.endpoint.deployed``) gets ``within`` = the idle window in
    seconds — Prefect parses an env-templated ``within`` as a string, which it rejects.
    """
    import yaml

    from core.io import atomic_write_text

    try:
        config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    for deployment in config.get("deployments") or []:
        for trigger in deployment.get("triggers") or []:
            if IDLE_TRIGGER_EVENT in (trigger.get("after") or []):
                trigger["within"] = idle_seconds(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False))
    return target


def deploy_env(settings: Settings, api_url: str, project_dir: Path) -> dict[str, str]:
    """Environment ``prefect deploy`` templates ``prefect.yaml`` from (see the file's header)."""
    return {
        **client_env(settings, api_url),
        "SENTIFLOW_PROJECT_DIR": str(project_dir.resolve()),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }


def ensure_work_pool(name: str = WORK_POOL, pool_type: str = "process") -> bool:
    """Create the work pool unless it exists; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            if pool.type != pool_type:
                raise ConfigError(
                    f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; delete it with "
                    f"`prefect work-pool delete {name}` or point prefect.yaml at another pool"
                )
            return False
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
        except ObjectAlreadyExists:
            return False
        return True


def run_prefect_deploy(
    settings: Settings,
    api_url: str,
    project_dir: Path,
    prefect_file: Path | None = None,
    names: Sequence[str] = (),
) -> str:
    """Run ``prefect --no-prompt deploy`` (all, or ``names``) in ``project_dir``; returns its output."""
    prefect_file = (prefect_file or project_dir / PREFECT_FILE).resolve()
    if not prefect_file.is_file():
        raise ConfigError(f"{prefect_file} does not exist; pass an existing --prefect-file")
    rendered = render_prefect_file(settings, prefect_file, prefect_home(settings) / f"rendered-{prefect_file.name}")
    args = ["--no-prompt", "deploy", "--prefect-file", str(rendered)]
    args += [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    done = run_prefect(args, deploy_env(settings, api_url, project_dir), project_dir, DEPLOY_TIMEOUT_SECONDS)
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-8:] if line.strip())
        raise SentiflowError(f"`prefect deploy` failed for {prefect_file} (exit {done.returncode}): {tail}")
    return output


def list_deployments(pool: str = WORK_POOL) -> list[str]:
    """``flow-name/deployment-name`` of every deployment on ``pool``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        flow_names = {d.flow_id: client.read_flow(d.flow_id).name for d in deployments}
    return sorted(f"{flow_names[d.flow_id]}/{d.name}" for d in deployments)


def ensure_automations(settings: Settings, report: DeployReport) -> None:
    """Notification block + failure automation (when ``notify_url`` is set) and the zombie automation."""
    from sentiflow.ops.automations import (
        delete_automation,
        failure_automation,
        upsert_automation,
        zombie_automation,
    )
    from sentiflow.ops.notifications import save_notification_block

    if settings.notify_url:
        report.notify_block_id = save_notification_block(settings.notify_url)
        report.automations[FAILURE_AUTOMATION] = upsert_automation(failure_automation(report.notify_block_id))
    elif delete_automation(FAILURE_AUTOMATION):
        report.removed_automations.append(FAILURE_AUTOMATION)
    report.automations[ZOMBIE_AUTOMATION] = upsert_automation(zombie_automation(ZOMBIE_AFTER_SECONDS))


def deploy_all(
    settings: Settings,
    project_dir: Path | None = None,
    api_url: str | None = None,
    prefect_file: Path | None = None,
    names: Sequence[str] = (),
) -> DeployReport:
    """Create or update the pool, result storage, deployments, notification block and automations."""
    from sentiflow.ops.server import is_healthy
    from sentiflow.ops.storage import ensure_result_storage

    project_dir = find_project_dir(project_dir)
    api_url = (api_url or resolve_api_url(settings)).rstrip("/")
    if not is_healthy(api_url, timeout=5):
        raise SentiflowError(
            f"the Prefect API at {api_url} does not answer; start it with `sentiflow prefect server` "
            "or fix PREFECT_API_URL"
        )
    with use_api(api_url):
        pool_created = ensure_work_pool(WORK_POOL)
        storage = ensure_result_storage(settings)
        report = DeployReport(
            api_url=api_url,
            ui_url=ui_url_for(api_url),
            work_pool=WORK_POOL,
            pool_created=pool_created,
            result_storage=storage,
        )
        run_prefect_deploy(settings, api_url, project_dir, prefect_file, names)
        ensure_automations(settings, report)
        report.deployments = list_deployments(WORK_POOL)
    return report
