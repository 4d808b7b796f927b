"""A small, strict evaluator of AWS IAM identity policies (no resource policies, SCPs or boundaries).

Why our own: moto's access-control mode ignores Conditions and non-S3 resource ARNs (see ../moto_iam_mode),
principalmapper (the only Python library with a local simulator) no longer imports on Python >= 3.10 and was last
released in 2022, and policyuniverse/parliament parse and lint policies but do not evaluate requests. This module
implements exactly the documented evaluation rules sentiflow's policies rely on and refuses anything else
(unknown condition operator -> ValueError), so a policy cannot silently pass by using a construct it ignores.

Rules (IAM User Guide, "Policy evaluation logic" and "Condition operators"):
- an explicit Deny in any statement wins; else any Allow allows; else implicit deny;
- Action/NotAction match case-insensitively with * and ? wildcards; Resource/NotResource case-sensitively;
- blocks in a Condition are ANDed, keys in a block are ANDed, values for one key are ORed;
- condition keys are case-insensitive, values case-sensitive (except ...IgnoreCase);
- a missing key: positive operators false, negated operators (StringNotEquals, StringNotLike, ArnNotLike,
  ArnNotEquals) true, ...IfExists true, Null true/false by presence;
- ForAllValues: true when the key is missing or every request value matches one policy value;
  ForAnyValue: false when the key is missing, else true when some request value matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Context = dict[str, str | list[str]]


@dataclass(frozen=True)
class Request:
    """One authorization request: what AWS evaluates for a call (a call may need several)."""

    principal: str
    action: str
    resource: str
    context: tuple[tuple[str, str | tuple[str, ...]], ...] = ()
    source: str = ""  # where it came from: "recorded:sagemaker.CreateModel", "derived:...", "declared:..."

    @staticmethod
    def make(principal: str, action: str, resource: str, context: Context | None = None, source: str = "") -> Request:
        items = []
        for key, value in sorted((context or {}).items()):
            items.append((key, tuple(value) if isinstance(value, list | tuple) else str(value)))
        return Request(principal, action, resource, tuple(items), source)

    def ctx(self) -> dict[str, str | list[str]]:
        return {k.lower(): (list(v) if isinstance(v, tuple) else v) for k, v in self.context}

    def as_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "context": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.context},
            "source": self.source,
        }


@dataclass
class Grant:
    """One (statement, action pattern, resource pattern) of an Allow statement: the unit of the coverage check."""

    policy: str
    sid: str
    action: str
    resource: str

    def key(self) -> tuple[str, str, str, str]:
        return (self.policy, self.sid, self.action, self.resource)


@dataclass
class Decision:
    allowed: bool
    reason: str
    matched: list[Grant] = field(default_factory=list)


def _wild(pattern: str, value: str, ignore_case: bool) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


_BASE_OPS = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Bool",
    "Null",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
}
_NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
    "NumericNotEquals",
}


def _value_matches(op: str, policy_value: str, request_value: str) -> bool:
    """Whether one request value satisfies the *positive* form of ``op`` for one policy value."""
    positive = op.replace("Not", "", 1) if op in _NEGATED else op
    if positive == "StringEquals":
        return policy_value == request_value
    if positive == "StringEqualsIgnoreCase":
        return policy_value.lower() == request_value.lower()
    if positive in ("StringLike", "ArnLike", "ArnEquals"):  # ArnEquals also honours wildcards (IAM docs)
        return _wild(policy_value, request_value, ignore_case=False)
    if positive == "Bool":
        return policy_value.lower() == request_value.lower()
    if positive.startswith("Numeric"):
        a, b = float(request_value), float(policy_value)
        return {
            "NumericEquals": a == b,
            "NumericLessThan": a < b,
            "NumericLessThanEquals": a <= b,
            "NumericGreaterThan": a > b,
            "NumericGreaterThanEquals": a >= b,
        }[positive]
    raise ValueError(f"condition operator {op} is not supported by this evaluator")


def _condition_block(raw_op: str, keys: dict[str, Any], ctx: dict[str, Any]) -> bool:
    qualifier, _, op = raw_op.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if op not in _BASE_OPS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise ValueError(f"condition operator {raw_op} is not supported by this evaluator")
    for key, policy_values in keys.items():
        wanted = _list(policy_values)
        present = key.lower() in ctx
        request_values = _list(ctx.get(key.lower()))
        if op == "Null":
            if (wanted[0].lower() == "true") == present:
                return False
            continue
        if qualifier and op in _NEGATED:
            raise ValueError(f"{raw_op} is not supported (sentiflow's policies never use a negated set operator)")
        if qualifier == "ForAllValues":
            if present and not all(any(_value_matches(op, w, r) for w in wanted) for r in request_values):
                return False
            continue
        if qualifier == "ForAnyValue":
            if not present or not any(_value_matches(op, w, r) for w in wanted for r in request_values):
                return False
            continue
        if not present:
            if if_exists or op in _NEGATED:
                continue
            return False
        if len(request_values) != 1:
            raise ValueError(f"multi-valued key {key} needs ForAllValues/ForAnyValue (operator {raw_op})")
        hit = any(_value_matches(op, w, request_values[0]) for w in wanted)
        if hit == (op in _NEGATED):
            return False
    return True


def conditions_hold(condition: dict[str, Any] | None, ctx: dict[str, Any]) -> bool:
    return all(_condition_block(op, keys, ctx) for op, keys in (condition or {}).items())


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _check_shape(name: str, policy: dict[str, Any]) -> None:
    if re.search(r"\{\{\s*\w+\s*\}\}", json.dumps(policy)):
        raise ValueError(f"policy {name} still has template placeholders: render it first")
    for index, statement in enumerate(_statements(policy)):
        if "Principal" in statement or "NotPrincipal" in statement:
            raise ValueError(f"{name} statement {index}: identity policies have no Principal")
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise ValueError(f"{name} statement {index}: Effect must be Allow or Deny")
        if ("Action" in statement) == ("NotAction" in statement):
            raise ValueError(f"{name} statement {index}: exactly one of Action/NotAction")
        if ("Resource" in statement) == ("NotResource" in statement):
            raise ValueError(f"{name} statement {index}: exactly one of Resource/NotResource")


class PolicySet:
    """The identity policies attached to one principal."""

    def __init__(self, policies: dict[str, dict[str, Any]]) -> None:
        for name, policy in policies.items():
            _check_shape(name, policy)
        self.policies = policies

    @classmethod
    def from_files(cls, paths: list[Path], variables: dict[str, str]) -> PolicySet:
        return cls({p.name: render(p.read_text(), variables) for p in paths})

    def grants(self) -> list[Grant]:
        found = []
        for name, policy in self.policies.items():
            for index, statement in enumerate(_statements(policy)):
                if statement["Effect"] != "Allow":
                    continue
                sid = statement.get("Sid", f"#{index}")
                for action in _list(statement.get("Action") or ["NotAction"]):
                    for resource in _list(statement.get("Resource") or ["NotResource"]):
                        found.append(Grant(name, sid, action, resource))
        return found

    def evaluate(self, request: Request) -> Decision:
        ctx = request.ctx()
        allows: list[Grant] = []
        for name, policy in self.policies.items():
            for index, statement in enumerate(_statements(policy)):
                sid = statement.get("Sid", f"#{index}")
                if "Action" in statement:
                    actions = [a for a in _list(statement["Action"]) if _wild(a, request.action, ignore_case=True)]
                    if not actions:
                        continue
                else:
                    if any(_wild(a, request.action, ignore_case=True) for a in _list(statement["NotAction"])):
                        continue
                    actions = ["NotAction"]
                if "Resource" in statement:
                    resources = [r for r in _list(statement["Resource"]) if _wild(r, request.resource, False)]
                    if not resources:
                        continue
                else:
                    if any(_wild(r, request.resource, False) for r in _list(statement["NotResource"])):
                        continue
                    resources = ["NotResource"]
                if not conditions_hold(statement.get("Condition"), ctx):
                    continue
                if statement["Effect"] == "Deny":
                    return Decision(False, f"explicit deny by {name}:{sid}")
                allows.extend(Grant(name, sid, a, r) for a in actions for r in resources)
        if allows:
            return Decision(True, "allowed by " + ", ".join(sorted({f"{g.policy}:{g.sid}" for g in allows})), allows)
        return Decision(False, "implicit deny (no statement allows it)")


def render(text: str, variables: dict[str, str]) -> dict[str, Any]:
    """Fill ``{{name}}`` placeholders (deploy-time values: region, account, bucket, prefix, ...)."""
    for key, value in variables.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)
