"""What an IAM policy allows, for the launcher's own requests: each botocore request named as the IAM action(s) it
needs, on the resource ARN it touches, with the condition values the request carries.

Evaluated as IAM does for identity policies with Allow statements only: an action and a resource pattern must match
(``*`` and ``?`` wildcards), and every condition of the statement must hold. ``aws:ResourceTag/created-by`` is taken
as ``byoc-vision`` for ``byoc-*`` resources (the launcher tags everything it creates so, which moto does not keep for
every kind); a condition key this module does not know fails the check rather than passing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

REGION, ACCOUNT = "us-east-1", "123456789012"
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "cloudwatch": "cloudwatch"}
S3_ACTIONS = {
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
}
SAGEMAKER_NAMES = {
    "TrainingJobName": "training-job",
    "HyperParameterTuningJobName": "hyper-parameter-tuning-job",
    "TransformJobName": "transform-job",
    "EndpointName": "endpoint",
    "EndpointConfigName": "endpoint-config",
    "ModelName": "model",
}
NEEDS_NO_PERMISSION = {("sts", "GetCallerIdentity")}


@dataclass
class Need:
    """One IAM action on one resource, with the condition keys' values the request gives."""

    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)


def request_tags(params: dict) -> dict[str, str]:
    tags = params.get("Tags", params.get("tags", []))
    if isinstance(tags, dict):
        return tags
    return {t.get("Key", t.get("key")): t.get("Value", t.get("value")) for t in tags}


def sagemaker_resource(operation: str, params: dict) -> str:
    if operation.startswith(("List", "Search")) or (operation.startswith("Describe") and not params):
        return "*"
    if "ResourceArn" in params:
        return params["ResourceArn"]
    # the resource the operation is named for: CreateEndpoint -> the endpoint, not the config it names
    for name, kind in sorted(SAGEMAKER_NAMES.items(), key=lambda item: -len(item[0])):
        noun = name.removesuffix("Name")
        if noun in operation and name in params:
            return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{params[name].lower()}"
    for name, kind in SAGEMAKER_NAMES.items():
        if name in params:
            return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{params[name].lower()}"
    return "*"


def resource(service: str, operation: str, params: dict) -> str:
    """The ARN a request acts on (``*`` where IAM takes no resource for it)."""
    if service in ("sagemaker", "sagemaker-runtime"):
        return sagemaker_resource(operation, params)
    if service == "s3":
        bucket = params.get("Bucket", "")
        return f"arn:aws:s3:::{bucket}/{params['Key']}" if "Key" in params else f"arn:aws:s3:::{bucket}"
    if service == "ecr":
        if operation in ("GetAuthorizationToken", "GetRegistryScanningConfiguration"):
            return "*"
        name = (
            params.get("repositoryName")
            or (params.get("repositoryNames") or [None])[0]
            or params.get("resourceArn", "").rpartition("/")[2]
        )
        return f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name or '*'}"  # no name: every repository (a listing)
    if service == "iam":
        return f"arn:aws:iam::{ACCOUNT}:role/{params['RoleName']}" if "RoleName" in params else "*"
    if service == "logs":
        return (
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}" if "logGroupName" in params else "*"
        )
    if service == "cloudwatch":
        names = [params["AlarmName"]] if "AlarmName" in params else params.get("AlarmNames", [])
        return (
            f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{names[0]}"
            if names and operation != "DescribeAlarms"
            else "*"
        )
    if service == "application-autoscaling":
        if operation.startswith("Describe") or operation == "RegisterScalableTarget":
            return "*"  # a new target has no ARN yet; the IAM policy conditions it on the request instead
        return f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/{params.get('ResourceId', '')}"
    return "*"


def needs(service: str, operation: str, params: dict) -> list[Need]:
    """The permissions a request needs: its own action, plus iam:PassRole for a role it hands over and the tagging
    action where it creates with tags."""
    if (service, operation) in NEEDS_NO_PERMISSION:
        return []
    action = (
        f"{IAM_PREFIX.get(service, service)}:{S3_ACTIONS.get(operation, operation) if service == 's3' else operation}"
    )
    target = resource(service, operation, params)
    tags = request_tags(params)
    context = {f"aws:RequestTag/{k}": [v] for k, v in tags.items()}
    if service == "application-autoscaling":
        context.update(
            {
                "application-autoscaling:service-namespace": [params.get("ServiceNamespace", "")],
                "application-autoscaling:scalable-dimension": [params.get("ScalableDimension", "")],
            }
        )
    found = [Need(action, target, context)]
    if tags and service in ("iam", "cloudwatch", "ecr") and operation.startswith(("Create", "Put")):
        found.append(
            Need(
                {"iam": "iam:TagRole", "cloudwatch": "cloudwatch:TagResource", "ecr": "ecr:TagResource"}[service],
                target,
                context,
            )
        )
    if tags and service == "application-autoscaling":
        found.append(Need("application-autoscaling:TagResource", target, context))
    definition = params.get("TrainingJobDefinition", {})
    for role in (params.get("RoleArn"), params.get("ExecutionRoleArn"), definition.get("RoleArn")):
        if role:
            found.append(Need("iam:PassRole", role, {"iam:PassedToService": ["sagemaker.amazonaws.com"]}))
    return found


def listed(value) -> list:
    return value if isinstance(value, list) else [value]


def condition_holds(condition: dict, need: Need) -> bool:
    for operator, pairs in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            raise ValueError(f"condition operator {operator} is not evaluated here")
        for key, expected in pairs.items():
            if key.startswith("aws:ResourceTag/"):
                given = ["byoc-vision"] if "/byoc-" in need.resource or ":byoc-" in need.resource else []
            elif (
                key.startswith("aws:RequestTag/")
                or key in need.context
                or key
                in (
                    "iam:PassedToService",
                    "application-autoscaling:service-namespace",
                    "application-autoscaling:scalable-dimension",
                )
            ):
                given = need.context.get(key, [])
            else:
                raise ValueError(f"condition key {key} is not evaluated here")
            match = (lambda g, e: g == e) if operator == "StringEquals" else fnmatchcase
            if not any(match(g, e) for g in given for e in listed(expected)):
                return False
    return True


def allows(policy: dict, need: Need) -> bool:
    """Whether an Allow statement of ``policy`` grants ``need``."""
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or not any(fnmatchcase(need.action, a) for a in listed(statement["Action"])):
            continue
        if any(fnmatchcase(need.resource, r) for r in listed(statement["Resource"])) and condition_holds(
            statement.get("Condition", {}), need
        ):
            return True
    return False
