"""Tiny flows for the Prefect operations tests: real stage tasks (sentiflow's policies), no torch, no data.

``fixture_pipeline`` has three stages — ``prepare`` → ``fetch`` (HTTP GET of ``source``) → ``summarise`` — so
a run whose ``source`` is unreachable fails in the middle, and a retry after the URL is served shows
``prepare`` as Cached.
"""

from __future__ import annotations

import httpx
from prefect import flow, task

from tasks.policies import LOCAL_RETRIES, STAGE_OPTIONS


@task(name="prepare", **STAGE_OPTIONS, **LOCAL_RETRIES)
def prepare(n: int) -> list[int]:
    """A deterministic, cacheable first stage."""
    return list(range(n))


@task(name="fetch", **STAGE_OPTIONS, retries=0, on_failure=LOCAL_RETRIES["on_failure"])
def fetch(source: str) -> int:
    """Download ``source``; fails when nothing listens there."""
    response = httpx.get(source, timeout=5)
    response.raise_for_status()
    return len(response.content)


@task(name="summarise", **STAGE_OPTIONS, **LOCAL_RETRIES)
def summarise(values: list[int], size: int) -> dict[str, int]:
    """The last stage."""
    return {"total": sum(values), "bytes": size}


@flow(name="fixture-pipeline")
def fixture_pipeline(source: str = "http://127.0.0.1:9/nothing", n: int = 3) -> dict[str, int]:
    """prepare → fetch(source) → summarise."""
    values = prepare(n)
    size = fetch(source)
    return summarise(values, size)


@flow(name="fixture-teardown")
def fixture_teardown(endpoint: str | None = None, dry_run: bool = False) -> str | None:
    """Stands in for ``teardown-idle-endpoints`` until the real flow exists: echoes the endpoint."""
    return endpoint


@flow(name="fixture-approval")
def fixture_approval(timeout_s: int = 300) -> str:
    """Pause for a reviewer like the pipeline's gate; fails when promotion is rejected."""
    from sentiflow.prefect_ops.approval import request_approval

    if not request_approval("## Evaluation\n\n| metric | value |\n|---|---|\n| accuracy | 0.91 |", timeout_s):
        raise RuntimeError("promotion rejected by the reviewer")
    return "promoted"
