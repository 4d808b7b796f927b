"""Known answers of the evaluator (AWS's documented semantics); each would fail on a plausible wrong evaluator."""

import pytest

from tests.backends.aws.iam_proof.iam_eval import PolicySet, Request


def allowed(statement, action="x:Do", resource="arn:aws:x:::r/1", context=None):
    policy = PolicySet({"p": {"Version": "2012-10-17", "Statement": [statement]}})
    return policy.evaluate(Request.make("p", action, resource, context)).allowed


ALLOW = {"Effect": "Allow", "Action": "x:Do", "Resource": "*"}


def test_wildcards_and_case():
    assert allowed({**ALLOW, "Action": "X:d*"})  # actions are case-insensitive
    assert not allowed({**ALLOW, "Resource": "arn:aws:x:::R/*"})  # resources are not
    assert allowed({**ALLOW, "Resource": "arn:aws:x:::r/?"})
    not_do = {"Effect": "Allow", "NotAction": "x:Do", "Resource": "*"}
    assert not allowed(not_do)
    assert allowed(not_do, action="y:Other")


def test_missing_key_semantics():
    assert not allowed({**ALLOW, "Condition": {"StringEquals": {"aws:RequestTag/a": "1"}}})
    assert allowed({**ALLOW, "Condition": {"StringNotEquals": {"aws:RequestTag/a": "1"}}})
    assert allowed({**ALLOW, "Condition": {"StringEqualsIfExists": {"aws:RequestTag/a": "1"}}})
    assert allowed({**ALLOW, "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}})  # the classic trap
    assert not allowed({**ALLOW, "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}})
    assert allowed({**ALLOW, "Condition": {"Null": {"sagemaker:TaggingAction": "true"}}})
    assert not allowed({**ALLOW, "Condition": {"Null": {"sagemaker:TaggingAction": "false"}}})


def test_set_operators_and_case_insensitive_keys():
    cond = {"ForAllValues:StringLike": {"aws:TagKeys": ["project", "sentiflow:*"]}}
    assert allowed({**ALLOW, "Condition": cond}, context={"aws:TagKeys": ["project", "sentiflow:managed"]})
    assert not allowed({**ALLOW, "Condition": cond}, context={"aws:TagKeys": ["project", "owner"]})
    assert allowed(
        {**ALLOW, "Condition": {"StringEquals": {"AWS:RequestTag/a": "1"}}}, context={"aws:requesttag/a": "1"}
    )


def test_blocks_and_keys_are_anded_values_ored():
    cond = {"StringEquals": {"a": ["1", "2"], "b": "3"}, "StringLike": {"c": "x*"}}
    assert allowed({**ALLOW, "Condition": cond}, context={"a": "2", "b": "3", "c": "xy"})
    assert not allowed({**ALLOW, "Condition": cond}, context={"a": "2", "b": "4", "c": "xy"})
    assert not allowed({**ALLOW, "Condition": cond}, context={"a": "2", "b": "3"})


def test_explicit_deny_wins():
    policy = PolicySet(
        {
            "p": {
                "Version": "2012-10-17",
                "Statement": [ALLOW, {"Effect": "Deny", "Action": "x:*", "Resource": "arn:aws:x:::r/*"}],
            }
        }
    )
    assert not policy.evaluate(Request.make("p", "x:Do", "arn:aws:x:::r/1")).allowed
    assert policy.evaluate(Request.make("p", "x:Do", "arn:aws:x:::other")).allowed


def test_unsupported_operator_is_refused_not_ignored():
    with pytest.raises(ValueError):
        allowed({**ALLOW, "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}})
    with pytest.raises(ValueError):  # a multi-valued key without a set operator is ambiguous
        allowed({**ALLOW, "Condition": {"StringEquals": {"aws:TagKeys": "a"}}}, context={"aws:TagKeys": ["a", "b"]})


def test_placeholders_must_be_rendered():
    with pytest.raises(ValueError):
        PolicySet({"p": {"Version": "2012-10-17", "Statement": [{**ALLOW, "Resource": "arn:aws:s3:::{{bucket}}"}]}})
