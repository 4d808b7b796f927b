"""The optional ``operator-require-network-isolation.json``: attached beside the operator's policies, it refuses
every training job and model created without ``EnableNetworkIsolation`` and changes nothing else.

The requests are the recorded inventory's (the moto e2e runs, isolation off), and the same calls as the backend
sends them with ``SENTIFLOW_AWS_NETWORK_ISOLATION=true`` (the field itself is asserted on the backend's requests in
``tests/backends/aws/test_training.py`` and ``test_endpoints_transform.py``).
"""

import dataclasses
import json

import pytest

from tests.backends.aws.iam_proof.iam_eval import PolicySet
from tests.backends.aws.iam_proof.mapping import requests_for
from tests.backends.aws.iam_proof.proof import IAM, POLICIES, VARIABLES, load_inventory

ISOLATION_POLICY = "operator-require-network-isolation.json"
GUARDED = {"sagemaker:CreateTrainingJob", "sagemaker:CreateModel"}


def operator_policies(*extra: str) -> PolicySet:
    return PolicySet.from_files([IAM / name for name in (*POLICIES["operator"], *extra)], VARIABLES)


def with_isolation(calls: list, enabled: bool) -> list:
    """The calls with ``EnableNetworkIsolation=enabled`` on every training job and model they create."""
    return [
        dataclasses.replace(c, params={**c.params, "EnableNetworkIsolation": enabled})
        if f"{c.service}:{c.operation}" in GUARDED
        else c
        for c in calls
    ]


@pytest.fixture(scope="module")
def calls() -> list:
    sources, _ = load_inventory()
    recorded = [call for source in sources[:-1] for call in source.calls]
    if not any(c.service == "sagemaker" and c.operation == "CreateTrainingJob" for c in recorded):
        pytest.fail("no recorded CreateTrainingJob in inventory/: run the moto tests with -p recorder first")
    return recorded


def operator_requests(calls: list) -> list:
    return [r for r in requests_for(calls) if r.principal == "operator"]


def test_it_is_valid_iam_json_with_one_deny() -> None:
    policy = json.loads((IAM / ISOLATION_POLICY).read_text())
    assert [s["Effect"] for s in policy["Statement"]] == ["Deny"]
    assert operator_policies(ISOLATION_POLICY).grants() == operator_policies().grants()  # grants nothing


def test_creates_without_isolation_are_denied_and_nothing_else_changes(calls: list) -> None:
    shipped, enforced = operator_policies(), operator_policies(ISOLATION_POLICY)
    requests = operator_requests(calls)
    guarded = [r for r in requests if r.action in GUARDED]
    assert guarded and all(shipped.evaluate(r).allowed for r in guarded)
    for request in guarded:
        decision = enforced.evaluate(request)
        assert not decision.allowed and ISOLATION_POLICY in decision.reason, (request, decision)
    for request in requests:
        if request.action not in GUARDED:
            assert enforced.evaluate(request).allowed == shipped.evaluate(request).allowed, request


def test_isolated_creates_are_allowed(calls: list) -> None:
    enforced = operator_policies(ISOLATION_POLICY)
    guarded = [r for r in operator_requests(with_isolation(calls, True)) if r.action in GUARDED]
    assert guarded and all(dict(r.context)["sagemaker:NetworkIsolation"] == "true" for r in guarded)
    decisions = [(r, enforced.evaluate(r)) for r in guarded]
    assert [(r, d.reason) for r, d in decisions if not d.allowed] == []


def test_isolation_set_to_false_is_denied_too(calls: list) -> None:
    enforced = operator_policies(ISOLATION_POLICY)
    guarded = [r for r in operator_requests(with_isolation(calls, False)) if r.action in GUARDED]
    assert guarded and not any(enforced.evaluate(r).allowed for r in guarded)
