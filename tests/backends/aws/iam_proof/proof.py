"""The least-privilege proof: inventory of requests x policies -> lists of problems (empty = proven).

- ``denied``: a request some code makes that its principal's policies do not allow (a call without a grant);
- ``unused``: an (Allow statement, action, resource) grant no request needs (a grant no call needs);
- ``leaks``: a request that must be refused (tag bypass, foreign resources, results prefix) but is allowed;
- ``unmapped``: a recorded operation nobody has described (mapping.py) - a new call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.backends.aws.iam_proof.iam_eval import PolicySet, Request
from tests.backends.aws.iam_proof.mapping import Call, UnmappedCall, requests_for

HERE = Path(__file__).resolve().parent
IAM = HERE.parents[3] / "deployments" / "iam"
VARIABLES = {
    "bucket": "sentiflow-test-artifacts",
    "prefix": "sentiflow",
    "region": "us-east-1",
    "account": "123456789012",
    "name": "sentiflow",
    "dlc_account": "763104351884",
}
POLICIES = {
    "operator": ["operator.json", "operator-registry.json"],
    "sagemaker-execution": ["sagemaker-execution-role.json"],
    "lambda-predict": ["lambda-predict-role.json"],
}


def load_policies(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, PolicySet]:
    """Rendered policy sets per principal; ``overrides`` replaces a file's JSON (mutation tests)."""
    sets = {}
    for principal, files in POLICIES.items():
        docs = {}
        for name in files:
            if overrides and name in overrides:
                docs[name] = overrides[name]
            else:
                text = (IAM / name).read_text()
                for key, value in VARIABLES.items():
                    text = text.replace("{{" + key + "}}", value)
                docs[name] = json.loads(text)
        sets[principal] = PolicySet(docs)
    return sets


INVENTORY = HERE / "inventory"


@dataclass
class Source:
    calls: list[Call]
    scope: str = "all"  # "control-plane": S3 requests of this recording are not evidence
    name: str = ""


def load_inventory(directory: Path = INVENTORY) -> tuple[list[Source], list[dict[str, str]]]:
    """The recordings and declared calls named by inventory/sources.json, and the known defects."""
    manifest = json.loads((directory / "sources.json").read_text())
    sources = []
    for entry in manifest["recordings"]:
        path = directory / entry["file"]
        if not path.exists():
            continue
        exempt = set(entry.get("exempt_tests", []))
        raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        calls = [Call.from_json(r) for r in raw if r.get("test") not in exempt]
        sources.append(Source(calls, entry.get("scope", "all"), entry["file"]))
    sources.append(Source(load_calls([directory / manifest["declared"]]), "all", manifest["declared"]))
    return sources, manifest.get("known_defects", [])


def load_calls(paths: list[Path]) -> list[Call]:
    calls = []
    for path in paths:
        if path.suffix == ".jsonl":
            calls.extend(Call.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip())
        else:
            for raw in json.loads(path.read_text())["calls"]:
                raw = {"account": VARIABLES["account"], "region": VARIABLES["region"], **raw}
                calls.append(Call.from_json(raw))
    return calls


@dataclass
class Report:
    requests: list[Request]
    denied: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # denials that are listed known defects (code to fix)
    stale_known: list[str] = field(default_factory=list)  # listed defects that no longer occur: remove them


def _fmt(request: Request, reason: str = "") -> str:
    ctx = {k: v for k, v in request.context}
    return f"{request.principal}: {request.action} {request.resource} {ctx or ''} [{request.source}] {reason}".strip()


FORBIDDEN = [
    # The tag bypass of the landed operator.json: tag a foreign endpoint as managed, then update/delete it.
    Request.make(
        "operator",
        "sagemaker:AddTags",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/foreign-ep",
        {
            "aws:RequestTag/project": "sentiflow",
            "aws:RequestTag/sentiflow:managed": "true",
            "aws:TagKeys": ["project", "sentiflow:managed"],
        },
        "forbidden:tag-foreign",
    ),
    Request.make(
        "operator",
        "sagemaker:AddTags",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sentiflow-x",
        {
            "aws:RequestTag/project": "sentiflow",
            "aws:RequestTag/sentiflow:managed": "true",
            "aws:TagKeys": ["project", "sentiflow:managed"],
        },
        "forbidden:standalone-addtags",
    ),
    Request.make(
        "operator",
        "sagemaker:DeleteEndpoint",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sentiflow-unmanaged",
        {},
        "forbidden:untagged",
    ),
    Request.make(
        "operator",
        "sagemaker:UpdateEndpoint",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/foreign",
        {"aws:ResourceTag/sentiflow:managed": "true"},
        "forbidden:foreign-name",
    ),
    Request.make(
        "operator",
        "sagemaker:CreateModel",
        "arn:aws:sagemaker:us-east-1:123456789012:model/sentiflow-m",
        {},
        "forbidden:create-untagged",
    ),
    Request.make(
        "operator",
        "sagemaker:CreateTrainingJob",
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/other-job",
        {
            "aws:RequestTag/project": "sentiflow",
            "aws:RequestTag/sentiflow:managed": "true",
            "aws:TagKeys": ["project", "sentiflow:managed"],
        },
        "forbidden:create-foreign-name",
    ),
    Request.make(
        "operator",
        "sagemaker:AddTags",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sentiflow-x",
        {
            "aws:RequestTag/project": "sentiflow",
            "aws:RequestTag/sentiflow:managed": "true",
            "aws:RequestTag/owner": "eve",
            "aws:TagKeys": ["project", "sentiflow:managed", "owner"],
            "sagemaker:TaggingAction": "CreateEndpoint",
        },
        "forbidden:foreign-tag-key-on-create",
    ),
    Request.make(
        "operator",
        "iam:PassRole",
        "arn:aws:iam::123456789012:role/admin",
        {"iam:PassedToService": "sagemaker.amazonaws.com"},
        "forbidden:pass-admin",
    ),
    Request.make(
        "operator",
        "iam:PassRole",
        "arn:aws:iam::123456789012:role/sentiflow-sagemaker-execution",
        {"iam:PassedToService": "lambda.amazonaws.com"},
        "forbidden:exec-role-to-lambda",
    ),
    Request.make("operator", "s3:PutObject", "arn:aws:s3:::sentiflow-test-artifacts/other/x", {}, "forbidden:outside"),
    Request.make(
        "operator",
        "s3:DeleteObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/channels/x",
        {},
        "forbidden:delete",
    ),
    Request.make(
        "operator", "apigateway:PATCH", "arn:aws:apigateway:us-east-1::/apis/foreignid", {}, "forbidden:foreign-api"
    ),
    Request.make(
        "operator",
        "lambda:UpdateFunctionCode",
        "arn:aws:lambda:us-east-1:123456789012:function:other",
        {},
        "forbidden:foreign-function",
    ),
    Request.make(
        "operator",
        "lambda:AddPermission",
        "arn:aws:lambda:us-east-1:123456789012:function:sentiflow-predict",
        {"lambda:Principal": "*"},
        "forbidden:public-invoke",
    ),
    # The execution role runs containers that pip-install at start: never the results prefix, never code/.
    Request.make(
        "sagemaker-execution",
        "s3:PutObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/prefect-results/abc",
        {},
        "forbidden:results",
    ),
    Request.make(
        "sagemaker-execution",
        "s3:GetObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/prefect-results/abc",
        {},
        "forbidden:read-results",
    ),
    Request.make(
        "sagemaker-execution",
        "s3:PutObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/code/abc/sourcedir.tar.gz",
        {},
        "forbidden:code",
    ),
    Request.make(
        "sagemaker-execution",
        "s3:PutObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/channels/k/train/x.csv",
        {},
        "forbidden:channels",
    ),
    Request.make(
        "sagemaker-execution",
        "s3:PutObject",
        "arn:aws:s3:::sentiflow-test-artifacts/sentiflow/evaluations/j/evaluation.json",
        {},
        "forbidden:evaluation-report",
    ),
    Request.make(
        "lambda-predict",
        "sagemaker:InvokeEndpoint",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/other-ep",
        {},
        "forbidden:foreign-endpoint",
    ),
    Request.make(
        "lambda-predict",
        "sagemaker:InvokeEndpoint",
        "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/sentiflow-ep",
        {},
        "forbidden:other-region",
    ),
    Request.make(
        "lambda-predict",
        "sagemaker:InvokeEndpoint",
        "arn:aws:sagemaker:us-east-1:999999999999:endpoint/sentiflow-ep",
        {},
        "forbidden:other-account",
    ),
]


def _is_known(request: Request, known: list[dict[str, str]]) -> dict[str, str] | None:
    for defect in known:
        if request.action != defect["action"]:
            continue
        if "source" in defect and request.source != defect["source"]:
            continue
        if "resource_contains" in defect and defect["resource_contains"] not in request.resource:
            continue
        return defect
    return None


def prove(
    sources: list[Source] | list[Call],
    policies: dict[str, PolicySet] | None = None,
    forbidden: list[Request] | None = None,
    known: list[dict[str, str]] | None = None,
) -> Report:
    policies = policies or load_policies()
    if sources and isinstance(sources[0], Call):
        sources = [Source(list(sources))]  # type: ignore[arg-type]
    requests: list[Request] = []
    try:
        for source in sources:  # one World per recording: each is its own AWS account state
            found = requests_for(source.calls)
            if source.scope == "control-plane":
                found = [r for r in found if not r.action.startswith("s3:")]
            requests.extend(found)
    except UnmappedCall as error:
        return Report([], unmapped=[str(error)])
    unique = list(dict.fromkeys(requests))
    report = Report(unique)
    known = known or []
    seen_known: set[int] = set()
    used_actions: set[tuple[str, str, str]] = set()
    used_resources: set[tuple[str, str, str]] = set()
    for request in unique:
        if request.principal not in policies:
            report.denied.append(_fmt(request, "(no policy for this principal)"))
            continue
        decision = policies[request.principal].evaluate(request)
        if not decision.allowed:
            defect = _is_known(request, known)
            if defect is not None:
                seen_known.add(known.index(defect))
                report.known.append(_fmt(request, "KNOWN DEFECT: " + defect["fix"]))
            else:
                report.denied.append(_fmt(request, decision.reason))
        used_actions.update((g.policy, g.sid, g.action) for g in decision.matched)
        used_resources.update((g.policy, g.sid, g.resource) for g in decision.matched)
    # A grant no call needs: an action, or a resource pattern, of an Allow statement that no request used
    # through that statement (every action and every resource of every statement must earn its place).
    for principal, policy_set in policies.items():
        grants = policy_set.grants()
        for policy, sid, action in sorted({(g.policy, g.sid, g.action) for g in grants}):
            if (policy, sid, action) not in used_actions:
                report.unused.append(f"{principal}: {policy}:{sid} action {action} is used by no request")
        for policy, sid, resource in sorted({(g.policy, g.sid, g.resource) for g in grants}):
            if (policy, sid, resource) not in used_resources:
                report.unused.append(f"{principal}: {policy}:{sid} resource {resource} is used by no request")
    report.stale_known = [d["fix"] for i, d in enumerate(known) if i not in seen_known]
    for request in forbidden if forbidden is not None else FORBIDDEN:
        decision = policies[request.principal].evaluate(request)
        if decision.allowed:
            report.leaks.append(_fmt(request, decision.reason))
    return report
