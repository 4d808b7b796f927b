"""The least-privilege proof over the inventory (recorded e2e calls + declared calls).

The policies are deployments/iam/*.json; the inventory is inventory/*.jsonl, written by
`pytest -p tests.backends.aws.iam_proof.recorder` over the moto tests (commands in docs/aws.md, Security), plus
inventory/declared.json. Each assertion can fail: test_mutations.py shows each one failing on a broken policy.
"""

import pytest

from tests.backends.aws.iam_proof.proof import load_inventory, prove


@pytest.fixture(scope="module")
def inventory():
    sources, known = load_inventory()
    if not any(source.calls for source in sources[:-1]):
        pytest.fail("no recording in inventory/: run the moto tests with -p recorder first")
    return sources, known


@pytest.fixture(scope="module")
def report(inventory):
    sources, known = inventory
    return prove(sources, known=known)


def test_every_call_is_mapped(report):
    assert not report.unmapped, f"a new AWS call: describe it in mapping.py: {report.unmapped}"


def test_every_request_is_allowed(report):
    assert report.requests
    assert not report.denied, "requests the policies do not allow:\n" + "\n".join(report.denied)


def test_known_defects_still_occur(report):
    """A ratchet: a fixed defect must leave the list (and a new denial is not a known one)."""
    assert not report.stale_known, f"fixed, remove from inventory/sources.json: {report.stale_known}"


def test_every_grant_is_needed(report):
    assert not report.unused, "grants no call needs (remove them):\n" + "\n".join(report.unused)


def test_forbidden_requests_are_refused(report):
    assert not report.leaks, "requests that must be refused are allowed:\n" + "\n".join(report.leaks)


def test_every_call_has_a_principal(inventory):
    sources, _ = inventory
    unknown = sorted({f"{c.service}.{c.operation}" for s in sources for c in s.calls if c.principal == "unattributed"})
    assert not unknown, f"calls made outside the project code and outside the fixtures: {unknown}"
