"""The serving-parity stage, on the path production requests take: raw test reviews through the deployed
candidate endpoint must reproduce the batch transform, one for one.

Each review is sent the way the Lambda sends it — ``{"review": text}`` as ``application/json`` to
``backend.endpoints.invoke(candidate, …)``, so it crosses the real endpoint (the local server, or SageMaker's
runtime) — and the answers are compared with the transform's labels and scores of the same rows by
``evaluation.parity``. ``passed`` False means the candidate is deleted and the old endpoint keeps serving.
Not cached: a new candidate endpoint is a new thing to check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.errors import SentiflowError
from tasks.policies import local_stage

CONCURRENCY = 4
"""Requests in flight at once (the endpoint serves them in parallel; the API would too)."""


def endpoint_answers(endpoints: Any, name: str, reviews: Sequence[str]) -> list[dict[str, Any]]:
    """One serving answer per review from endpoint ``name``, each sent exactly as the Lambda sends it."""

    def one(review: str) -> dict[str, Any]:
        body = json.dumps({"review": review}).encode("utf-8")
        try:
            raw = endpoints.invoke(name, body, "application/json", "application/json")
        except SentiflowError as error:  # the endpoint rejected this review (a 4xx): count it, carry on
            return {"error": str(error)}
        answer = json.loads(raw)
        return answer[0] if isinstance(answer, list) else answer

    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="parity") as pool:
        return list(pool.map(one, reviews))


def check_endpoint(
    backend: Any,
    endpoint_name: str,
    dataset_uri: str,
    transform_output_uri: str,
    sample: int,
    seed: int,
    max_reviews_per_class: int | None,
) -> Any:
    """The parity verdict (``evaluation.parity.ParityResult``) of ``endpoint_name`` against the transform."""
    from evaluation.parity import parity_check
    from tasks.data.load import read_dataset
    from tasks.data.prepare import raw_test_reviews
    from tasks.transform import load_transform_scores

    labels, scores = load_transform_scores(backend.store, transform_output_uri)
    reviews = raw_test_reviews(read_dataset(backend.store, dataset_uri), max_reviews_per_class, seed)
    return parity_check(
        reviews,
        scores,
        sample,
        lambda picked: endpoint_answers(backend.endpoints, endpoint_name, picked),
        batch_labels=labels,
        seed=seed,
    )


@task(**local_stage("serving-parity"), cache_policy=NO_CACHE)
def parity_task(
    endpoint_name: str,
    dataset_uri: str,
    transform_output_uri: str,
    sample: int,
    seed: int,
    max_reviews_per_class: int | None,
    backend: str,
) -> dict[str, Any]:
    """Raw test reviews through the candidate endpoint vs the batch labels; ``passed`` False stops promotion."""
    from prefect.logging import get_run_logger

    from backends.base import get_backend
    from core.config import get_settings

    result = check_endpoint(
        get_backend(get_settings("parameter", backend=backend)),
        endpoint_name,
        dataset_uri,
        transform_output_uri,
        sample,
        seed,
        max_reviews_per_class,
    )
    logger = get_run_logger()
    (logger.info if result.passed else logger.error)("%s (endpoint %s)", result.summary, endpoint_name)
    return result.to_dict()
