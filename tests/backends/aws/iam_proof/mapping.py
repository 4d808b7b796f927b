"""From recorded boto3 calls to the IAM authorization requests AWS evaluates for them.

A boto3 call is not one IAM check. This module states, per operation the backend uses, every request AWS makes:
the action on each resource it touches (CreateEndpoint: the endpoint *and* its config), the dependent actions
(iam:PassRole with iam:PassedToService; sagemaker:AddTags with sagemaker:TaggingAction when a Create* carries
Tags; lambda:TagResource for CreateFunction with Tags), and the request context (aws:RequestTag/*, aws:TagKeys,
aws:ResourceTag/* of the existing resource, s3:prefix, lambda:Principal, cloudwatch:namespace).

It also *derives* what AWS services then do with the roles sentiflow passes (SageMaker reads the channels with the
execution role, writes model.tar.gz, pulls the DLC image, writes logs; the Lambda invokes its endpoint), because
those calls never pass through boto3 in this process.

An operation without a mapping raises UnmappedCall: a new AWS call fails the suite until someone states what
it needs (and the policy grants it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tests.backends.aws.iam_proof.iam_eval import Request

SAGEMAKER_ROLE_PRINCIPAL = "sagemaker-execution"
LAMBDA_ROLE_PRINCIPAL = "lambda-predict"
ROLE_PRINCIPALS = {
    "sentiflow-sagemaker-execution": SAGEMAKER_ROLE_PRINCIPAL,
    "sentiflow-lambda-predict": LAMBDA_ROLE_PRINCIPAL,
}


class UnmappedCall(Exception):
    pass


@dataclass
class Call:
    principal: str
    service: str
    operation: str
    params: dict[str, Any]
    region: str
    account: str
    response: dict[str, Any] | None = None
    error: str | None = None

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Call:
        return Call(
            **{
                k: raw.get(k)
                for k in ("principal", "service", "operation", "params", "region", "account", "response", "error")
            }
        )


@dataclass
class World:
    """What the mapping learns along the recording: tags per ARN, tags per HTTP API id, models' data and images."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    api_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)


def _tags_list(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in tags or []}


def request_tag_context(tags: dict[str, str]) -> dict[str, Any]:
    if not tags:
        return {}
    ctx: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    ctx["aws:TagKeys"] = sorted(tags)
    return ctx


def resource_tag_context(tags: dict[str, str] | None) -> dict[str, Any]:
    return {f"aws:ResourceTag/{k}": v for k, v in (tags or {}).items()}


def s3_split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def s3_object(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


# --- SageMaker -----------------------------------------------------------------------------------------------
SM_NAME_PARAM = {
    "TrainingJob": ("training-job", "TrainingJobName"),
    "TransformJob": ("transform-job", "TransformJobName"),
    "Model": ("model", "ModelName"),
    "EndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "Endpoint": ("endpoint", "EndpointName"),
    "ModelPackageGroup": ("model-package-group", "ModelPackageGroupName"),
}


def sm_arn(call: Call, kind: str, name: str) -> str:
    # SageMaker lower-cases resource names in ARNs.
    return f"arn:aws:sagemaker:{call.region}:{call.account}:{kind}/{name.lower()}"


def _role_principal(role_arn: str | None) -> str | None:
    if not role_arn:
        return None
    return ROLE_PRINCIPALS.get(role_arn.rsplit("/", 1)[-1], f"role:{role_arn.rsplit('/', 1)[-1]}")


def _pass_role(call: Call, role_arn: str, service: str, source: str) -> Request:
    return Request.make(call.principal, "iam:PassRole", role_arn, {"iam:PassedToService": service}, source)


def _ecr(principal: str, image: str, region: str, source: str) -> Iterator[Request]:
    host, _, path = image.partition("/")
    account = host.split(".", 1)[0]
    repository = path.split(":", 1)[0].split("@", 1)[0]
    yield Request.make(principal, "ecr:GetAuthorizationToken", "*", source=source)
    arn = f"arn:aws:ecr:{region}:{account}:repository/{repository}"
    for action in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
        yield Request.make(principal, action, arn, source=source)


def _logs(principal: str, call: Call, group: str, stream: str, source: str) -> Iterator[Request]:
    base = f"arn:aws:logs:{call.region}:{call.account}:log-group:{group}"
    yield Request.make(principal, "logs:CreateLogGroup", base, source=source)
    yield Request.make(principal, "logs:DescribeLogStreams", base, source=source)
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        yield Request.make(principal, action, f"{base}:log-stream:{stream}", source=source)


def _read_prefix(principal: str, uri: str, source: str) -> Iterator[Request]:
    bucket, key = s3_split(uri)
    yield Request.make(principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": key}, source)
    obj = key if not key.endswith("/") else key + "some-object"
    yield Request.make(principal, "s3:GetObject", s3_object(bucket, obj), source=source)


def derived_sagemaker(call: Call, world: World) -> Iterator[Request]:
    """What SageMaker does with the execution role after a Create* call (never visible to boto3 here)."""
    p = call.params
    op = call.operation
    if op == "CreateTrainingJob":
        who = _role_principal(p.get("RoleArn"))
        src = f"derived:sagemaker.CreateTrainingJob:{p['TrainingJobName']}"
        for channel in p.get("InputDataConfig", []):
            yield from _read_prefix(who, channel["DataSource"]["S3DataSource"]["S3Uri"], src)
        submit = p.get("HyperParameters", {}).get("sagemaker_submit_directory")
        if submit:
            bucket, key = s3_split(json.loads(submit))
            yield Request.make(who, "s3:GetObject", s3_object(bucket, key), source=src)
        out_bucket, out_key = s3_split(p["OutputDataConfig"]["S3OutputPath"].rstrip("/"))
        yield Request.make(
            who,
            "s3:PutObject",
            s3_object(out_bucket, f"{out_key}/{p['TrainingJobName']}/output/model.tar.gz"),
            source=src,
        )
        if p.get("CheckpointConfig"):
            ckpt = p["CheckpointConfig"]["S3Uri"].rstrip("/") + "/"
            yield from _read_prefix(who, ckpt, src)
            bucket, key = s3_split(ckpt)
            yield Request.make(who, "s3:PutObject", s3_object(bucket, key + "checkpoint.pth"), source=src)
        yield from _ecr(who, p["AlgorithmSpecification"]["TrainingImage"], call.region, src)
        yield from _logs(who, call, "/aws/sagemaker/TrainingJobs", f"{p['TrainingJobName']}/algo-1-1700000000", src)
        if p["AlgorithmSpecification"].get("MetricDefinitions"):
            yield Request.make(
                who, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}, src
            )
    elif op == "CreateModel":
        world.models[p["ModelName"]] = {
            "role": p.get("ExecutionRoleArn", ""),
            "image": p["PrimaryContainer"]["Image"],
            "data": p["PrimaryContainer"].get("ModelDataUrl", ""),
        }
    elif op in ("CreateTransformJob", "CreateEndpoint"):
        models = []
        if op == "CreateTransformJob":
            models = [p["ModelName"]]
        else:
            config = world.models.get("config:" + p["EndpointConfigName"], {})
            models = [m for m in config.get("models", "").split(",") if m]
        for model_name in models:
            model = world.models.get(model_name)
            if not model:
                continue
            who = _role_principal(model["role"])
            src = f"derived:sagemaker.{op}:{model_name}"
            if model["data"]:
                bucket, key = s3_split(model["data"])
                yield Request.make(who, "s3:GetObject", s3_object(bucket, key), source=src)
            yield from _ecr(who, model["image"], call.region, src)
            if op == "CreateTransformJob":
                yield from _read_prefix(who, p["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"], src)
                out_bucket, out_key = s3_split(p["TransformOutput"]["S3OutputPath"].rstrip("/"))
                yield Request.make(
                    who, "s3:PutObject", s3_object(out_bucket, f"{out_key}/test_features.csv.out"), source=src
                )
                yield from _logs(who, call, "/aws/sagemaker/TransformJobs", f"{p['TransformJobName']}/i-0abc", src)
            else:
                yield from _logs(who, call, f"/aws/sagemaker/Endpoints/{p['EndpointName']}", "AllTraffic/i-0abc", src)
    elif op == "CreateEndpointConfig":
        world.models["config:" + p["EndpointConfigName"]] = {
            "models": ",".join(v["ModelName"] for v in p.get("ProductionVariants", []))
        }


def sagemaker(call: Call, world: World) -> Iterator[Request]:
    p, op = call.params, call.operation
    src = f"recorded:sagemaker.{op}"
    if (op.startswith("Create") and op[6:] in SM_NAME_PARAM) or op == "CreateModelPackage":
        if op == "CreateModelPackage":
            group = p["ModelPackageGroupName"]
            arn = sm_arn(call, "model-package", f"{group}/1")
            resources = [arn]
        else:
            kind, param = SM_NAME_PARAM[op[6:]]
            arn = sm_arn(call, kind, p[param])
            resources = [arn]
            if op == "CreateEndpoint":
                resources.append(sm_arn(call, "endpoint-config", p["EndpointConfigName"]))
        tags = _tags_list(p.get("Tags"))
        ctx = request_tag_context(tags)
        if op in ("CreateTrainingJob", "CreateModel") and "EnableNetworkIsolation" in p:
            ctx["sagemaker:NetworkIsolation"] = str(bool(p["EnableNetworkIsolation"])).lower()
        for resource in resources:
            extra = {} if resource == arn else resource_tag_context(world.tags.get(resource))
            yield Request.make(call.principal, f"sagemaker:{op}", resource, {**ctx, **extra}, src)
        if tags:  # tag-on-create: SageMaker also authorizes AddTags, with sagemaker:TaggingAction
            yield Request.make(call.principal, "sagemaker:AddTags", arn, {**ctx, "sagemaker:TaggingAction": op}, src)
        role = p.get("RoleArn") or p.get("ExecutionRoleArn")
        if role:
            yield _pass_role(call, role, "sagemaker.amazonaws.com", src)
        if call.error is None:
            world.tags[arn] = dict(tags)
        yield from derived_sagemaker(call, world)
        return
    for verb in ("Describe", "Stop", "Delete"):
        if op.startswith(verb) and op[len(verb) :] in SM_NAME_PARAM:
            kind, param = SM_NAME_PARAM[op[len(verb) :]]
            arn = sm_arn(call, kind, p[param])
            yield Request.make(call.principal, f"sagemaker:{op}", arn, resource_tag_context(world.tags.get(arn)), src)
            return
    if op == "UpdateEndpoint":
        for arn in (
            sm_arn(call, "endpoint", p["EndpointName"]),
            sm_arn(call, "endpoint-config", p["EndpointConfigName"]),
        ):
            yield Request.make(
                call.principal, "sagemaker:UpdateEndpoint", arn, resource_tag_context(world.tags.get(arn)), src
            )
        return
    if op == "ListTags":
        arn = p["ResourceArn"]
        if call.response and "Tags" in call.response:
            world.tags.setdefault(arn, _tags_list(call.response["Tags"]))
        yield Request.make(call.principal, "sagemaker:ListTags", arn, resource_tag_context(world.tags.get(arn)), src)
        return
    if op == "AddTags":  # a standalone AddTags: no sagemaker:TaggingAction in the context
        arn = p["ResourceArn"]
        tags = _tags_list(p.get("Tags"))
        ctx = {**request_tag_context(tags), **resource_tag_context(world.tags.get(arn))}
        yield Request.make(call.principal, "sagemaker:AddTags", arn, ctx, src)
        if call.error is None:
            world.tags.setdefault(arn, {}).update(tags)
        return
    if op in ("ListEndpoints", "ListModelPackages"):
        yield Request.make(call.principal, f"sagemaker:{op}", "*", source=src)
        return
    if op in ("UpdateModelPackage", "DescribeModelPackage"):
        name = p.get("ModelPackageArn") or p.get("ModelPackageName")
        arn = name if name.startswith("arn:") else sm_arn(call, "model-package", name)
        yield Request.make(call.principal, f"sagemaker:{op}", arn, source=src)
        return
    if op == "DescribeModelPackageGroup":
        yield Request.make(
            call.principal,
            f"sagemaker:{op}",
            sm_arn(call, "model-package-group", p["ModelPackageGroupName"]),
            source=src,
        )
        return
    raise UnmappedCall(f"sagemaker.{op}")


def sagemaker_runtime(call: Call, world: World) -> Iterator[Request]:
    if call.operation != "InvokeEndpoint":
        raise UnmappedCall(f"sagemaker-runtime.{call.operation}")
    arn = sm_arn(call, "endpoint", call.params["EndpointName"])
    yield Request.make(
        call.principal,
        "sagemaker:InvokeEndpoint",
        arn,
        resource_tag_context(world.tags.get(arn)),
        "recorded:sagemaker-runtime.InvokeEndpoint",
    )


# --- S3 ------------------------------------------------------------------------------------------------------
S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}


def s3(call: Call, world: World) -> Iterator[Request]:
    p, op = call.params, call.operation
    src = f"recorded:s3.{op}"
    bucket = p.get("Bucket")
    if op in S3_OBJECT_ACTIONS:
        yield Request.make(call.principal, S3_OBJECT_ACTIONS[op], s3_object(bucket, p["Key"]), source=src)
        if op == "HeadObject" and call.principal == "operator":
            # S3 answers 404 (not 403) for a missing key only with s3:ListBucket on the bucket; the store's
            # existence checks rely on it. (The execution role's HeadObjects come from the moto world's
            # emulation of SageMaker, which lists and gets; not checked for 404 semantics.)
            yield Request.make(
                call.principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", source=src + ":404-on-missing"
            )
        return
    if op in ("ListObjectsV2", "ListObjects"):
        ctx = {"s3:prefix": p["Prefix"]} if "Prefix" in p else {}
        yield Request.make(call.principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", ctx, src)
        return
    if op == "HeadBucket":
        yield Request.make(call.principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", source=src)
        return
    raise UnmappedCall(f"s3.{op}")


# --- Lambda --------------------------------------------------------------------------------------------------
def lambda_(call: Call, world: World) -> Iterator[Request]:
    p, op = call.params, call.operation
    src = f"recorded:lambda.{op}"
    name = p.get("FunctionName", "")
    arn = name if name.startswith("arn:") else f"arn:aws:lambda:{call.region}:{call.account}:function:{name}"
    simple = {
        "GetFunction",
        "GetFunctionConfiguration",
        "UpdateFunctionCode",
        "GetPolicy",
        "RemovePermission",
        "PutFunctionConcurrency",
        "DeleteFunction",
    }
    if op in simple:
        yield Request.make(call.principal, f"lambda:{op}", arn, source=src)
        if op == "GetFunction" and call.response and call.response.get("Tags"):
            world.tags.setdefault(arn, dict(call.response["Tags"]))
        return
    if op == "CreateFunction":
        tags = dict(p.get("Tags") or {})
        ctx = request_tag_context(tags)
        yield Request.make(call.principal, "lambda:CreateFunction", arn, ctx, src)
        if tags:
            yield Request.make(call.principal, "lambda:TagResource", arn, ctx, src + ":tag-on-create")
        yield _pass_role(call, p["Role"], "lambda.amazonaws.com", src)
        yield from _derived_lambda(call, p)
        return
    if op == "UpdateFunctionConfiguration":
        yield Request.make(call.principal, "lambda:UpdateFunctionConfiguration", arn, source=src)
        if p.get("Role"):
            yield _pass_role(call, p["Role"], "lambda.amazonaws.com", src)
        yield from _derived_lambda(call, p)
        return
    if op == "AddPermission":
        yield Request.make(call.principal, "lambda:AddPermission", arn, {"lambda:Principal": p["Principal"]}, src)
        return
    raise UnmappedCall(f"lambda.{op}")


def _derived_lambda(call: Call, p: dict[str, Any]) -> Iterator[Request]:
    """The function's role: invoke the endpoint named in its environment; write its own logs."""
    role = p.get("Role")
    endpoint = (p.get("Environment") or {}).get("Variables", {}).get("ENDPOINT_NAME")
    who = _role_principal(role) if role else LAMBDA_ROLE_PRINCIPAL
    src = f"derived:lambda.{call.operation}:{p['FunctionName']}"
    if endpoint:
        yield Request.make(who, "sagemaker:InvokeEndpoint", sm_arn(call, "endpoint", endpoint), source=src)
    group = f"/aws/lambda/{p['FunctionName']}"
    base = f"arn:aws:logs:{call.region}:{call.account}:log-group:{group}"
    yield Request.make(who, "logs:CreateLogGroup", base, source=src)
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        yield Request.make(who, action, f"{base}:log-stream:2026/01/01/[$LATEST]abc", source=src)


# --- API Gateway v2 (IAM actions are HTTP verbs on paths) --------------------------------------------------------
APIGW = {
    "GetApis": ("GET", "/apis"),
    "CreateApi": ("POST", "/apis"),
    "GetApi": ("GET", "/apis/{ApiId}"),
    "UpdateApi": ("PATCH", "/apis/{ApiId}"),
    "DeleteApi": ("DELETE", "/apis/{ApiId}"),
    "GetIntegrations": ("GET", "/apis/{ApiId}/integrations"),
    "CreateIntegration": ("POST", "/apis/{ApiId}/integrations"),
    "GetRoutes": ("GET", "/apis/{ApiId}/routes"),
    "CreateRoute": ("POST", "/apis/{ApiId}/routes"),
    "UpdateRoute": ("PATCH", "/apis/{ApiId}/routes/{RouteId}"),
    "GetStages": ("GET", "/apis/{ApiId}/stages"),
    "CreateStage": ("POST", "/apis/{ApiId}/stages"),
    "UpdateStage": ("PATCH", "/apis/{ApiId}/stages/{StageName}"),
}


def apigatewayv2(call: Call, world: World) -> Iterator[Request]:
    p, op = call.params, call.operation
    if op not in APIGW:
        raise UnmappedCall(f"apigatewayv2.{op}")
    verb, template = APIGW[op]
    path = template.format(**{k: quote(str(v), safe="$") for k, v in p.items() if isinstance(v, str)})
    arn = f"arn:aws:apigateway:{call.region}::{path}"
    ctx: dict[str, Any] = {}
    if "ApiId" in p:
        ctx.update(resource_tag_context(world.api_tags.get(p["ApiId"])))
    if op in ("CreateApi", "CreateStage"):
        ctx.update(request_tag_context(dict(p.get("Tags") or {})))
    yield Request.make(call.principal, f"apigateway:{verb}", arn, ctx, f"recorded:apigatewayv2.{op}")
    if call.response:
        if op == "CreateApi" and "ApiId" in call.response:
            world.api_tags[call.response["ApiId"]] = dict(p.get("Tags") or {})
        if op == "GetApis":
            for item in call.response.get("Items", []):
                world.api_tags.setdefault(item["ApiId"], dict(item.get("Tags") or {}))


# --- CloudWatch Logs and metrics -----------------------------------------------------------------------------------
def logs(call: Call, world: World) -> Iterator[Request]:
    p, op = call.params, call.operation
    base = f"arn:aws:logs:{call.region}:{call.account}:log-group:{p.get('logGroupName', '')}"
    src = f"recorded:logs.{op}"
    if op in ("DescribeLogStreams", "CreateLogGroup"):
        yield Request.make(call.principal, f"logs:{op}", base, source=src)
    elif op in ("GetLogEvents", "PutLogEvents", "CreateLogStream"):
        yield Request.make(call.principal, f"logs:{op}", f"{base}:log-stream:{p['logStreamName']}", source=src)
    else:
        raise UnmappedCall(f"logs.{op}")


def cloudwatch(call: Call, world: World) -> Iterator[Request]:
    if call.operation == "GetMetricStatistics":
        yield Request.make(call.principal, "cloudwatch:GetMetricStatistics", "*", source="recorded:cloudwatch")
    elif call.operation == "PutMetricData":
        yield Request.make(
            call.principal,
            "cloudwatch:PutMetricData",
            "*",
            {"cloudwatch:namespace": call.params["Namespace"]},
            "recorded:cloudwatch",
        )
    else:
        raise UnmappedCall(f"cloudwatch.{call.operation}")


def sts(call: Call, world: World) -> Iterator[Request]:
    if call.operation != "GetCallerIdentity":  # needs no permission
        raise UnmappedCall(f"sts.{call.operation}")
    return iter(())


HANDLERS = {
    "sagemaker": sagemaker,
    "sagemaker-runtime": sagemaker_runtime,
    "s3": s3,
    "lambda": lambda_,
    "apigatewayv2": apigatewayv2,
    "logs": logs,
    "cloudwatch": cloudwatch,
    "sts": sts,
}


def requests_for(calls: list[Call]) -> list[Request]:
    """Every authorization request of the calls, in order (fixture calls only update what the world knows)."""
    world = World()
    found: list[Request] = []
    for call in calls:
        handler = HANDLERS.get(call.service)
        try:
            if handler is None:
                raise UnmappedCall(f"{call.service}.{call.operation}")
            produced = list(handler(call, world))
        except UnmappedCall:
            if call.principal == "fixture":
                continue  # test setup may do anything; it only teaches the world what it maps
            raise
        if call.principal != "fixture":
            found.extend(produced)
    return found
