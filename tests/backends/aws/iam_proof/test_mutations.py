"""The proof fails when it should: a removed grant, an unused grant, the tag bypass, a new unmapped call."""

import json

import pytest

from tests.backends.aws.iam_proof.mapping import Call
from tests.backends.aws.iam_proof.proof import IAM, VARIABLES, Source, load_inventory, load_policies, prove


def rendered(name):
    text = (IAM / name).read_text()
    for key, value in VARIABLES.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)


@pytest.fixture(scope="module")
def inventory():
    sources, known = load_inventory()
    if not any(source.calls for source in sources[:-1]):
        pytest.fail("no recorded inventory in inventory/")
    return sources, known


def check(inventory, overrides=None, extra=None):
    sources, known = inventory
    if extra:
        sources = [*sources, Source(extra)]
    return prove(sources, load_policies(overrides), known=known)


def statement(policy, sid):
    return next(s for s in policy["Statement"] if s.get("Sid") == sid)


def test_baseline_is_clean(inventory):
    report = check(inventory)
    assert not (report.denied or report.unused or report.leaks or report.unmapped or report.stale_known)


def test_removing_a_grant_fails(inventory):
    operator = rendered("operator.json")
    statement(operator, "CreateSentiflowResourcesTagged")["Action"].remove("sagemaker:CreateEndpoint")
    report = check(inventory, {"operator.json": operator})
    assert any("sagemaker:CreateEndpoint" in line for line in report.denied), report.denied


def test_removing_tag_on_create_fails(inventory):
    operator = rendered("operator.json")
    operator["Statement"] = [s for s in operator["Statement"] if s.get("Sid") != "TagOnCreateOnly"]
    report = check(inventory, {"operator.json": operator})
    assert any("sagemaker:AddTags" in line for line in report.denied)


def test_removing_list_bucket_makes_head_object_fail(inventory):
    operator = rendered("operator.json")
    operator["Statement"] = [s for s in operator["Statement"] if s.get("Sid") != "StoreList"]
    report = check(inventory, {"operator.json": operator})
    assert any("404-on-missing" in line for line in report.denied)


def test_prefix_conditioned_list_bucket_is_not_enough_for_404(inventory):
    operator = rendered("operator.json")
    statement(operator, "StoreList")["Condition"] = {"StringLike": {"s3:prefix": ["sentiflow/*"]}}
    report = check(inventory, {"operator.json": operator})
    assert any("404-on-missing" in line for line in report.denied)


def test_an_unused_grant_fails(inventory):
    operator = rendered("operator.json")
    statement(operator, "ManageManagedEndpoints")["Action"].append("sagemaker:DeleteModel")
    report = check(inventory, {"operator.json": operator})
    assert any("action sagemaker:DeleteModel" in line for line in report.unused), report.unused


def test_the_landed_tag_bypass_is_caught(inventory):
    operator = rendered("operator.json")
    operator["Statement"].append(
        {
            "Sid": "LandedBypass",
            "Effect": "Allow",
            "Action": "sagemaker:AddTags",
            "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/*",
            "Condition": {"StringEquals": {"aws:RequestTag/project": "sentiflow"}},
        }
    )
    report = check(inventory, {"operator.json": operator})
    assert any("forbidden:tag-foreign" in line for line in report.leaks), report.leaks


def test_execution_role_writing_results_is_caught(inventory):
    role = rendered("sagemaker-execution-role.json")
    statement(role, "WriteTrainingAndTransformOutputs")["Resource"].append(
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/*"
    )
    report = check(inventory, {"sagemaker-execution-role.json": role})
    assert any("forbidden:results" in line for line in report.leaks)


def test_wildcard_region_in_lambda_role_is_caught(inventory):
    role = rendered("lambda-predict-role.json")
    statement(role, "InvokeSentiflowEndpoints")["Resource"] = "arn:aws:sagemaker:*:*:endpoint/sentiflow-*"
    report = check(inventory, {"lambda-predict-role.json": role})
    assert any("forbidden:other-region" in line for line in report.leaks)


def test_a_new_call_without_a_mapping_fails(inventory):
    extra = Call("operator", "sagemaker", "Search", {"Resource": "Endpoint"}, "us-east-1", "123456789012")
    report = check(inventory, extra=[extra])
    assert report.unmapped == ["sagemaker.Search"]


def test_a_new_call_without_a_grant_fails(inventory):
    extra = Call("operator", "sagemaker", "DeleteModel", {"ModelName": "sentiflow-x"}, "us-east-1", "123456789012")
    report = check(inventory, extra=[extra])
    assert any("sagemaker:DeleteModel" in line for line in report.denied), report.denied


def test_a_new_mapped_call_without_a_grant_fails(inventory):
    extra = Call(
        "operator", "sagemaker", "DescribeEndpoint", {"EndpointName": "prod-endpoint"}, "us-east-1", "123456789012"
    )
    report = check(inventory, extra=[extra])
    assert any("endpoint/prod-endpoint" in line for line in report.denied)
