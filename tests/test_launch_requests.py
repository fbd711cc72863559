"""Every request shape the launcher builds, checked against botocore's service model, and every AWS operation the
launcher's tests call, checked against the IAM policy docs/sagemaker.md gives for it (issue 27).

The table runs each command in each mode that changes what it sends, against moto_server (which accepts what AWS
refuses). Each request is recorded as built, before the launcher's own check (``sagemaker_launch.api_model``), and
checked again here: botocore's validator (required members, types, minimums) plus the model's maximums, enums and
patterns, which botocore leaves out."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import iam_policy
import pytest
from aws_stand_in import CALLS, queue_answers, run_cli
from conftest import REPO
from PIL import Image

from sagemaker_launch import api_model, aws, registry

REGION = "us-east-1"
BUCKET = "s3://byoc-req"
TRAIN_IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-train:0.1.0"
SERVE_IMAGE = TRAIN_IMAGE.replace("train", "serve")
JOBS_ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker-jobs"
ENDPOINTS_ROLE = JOBS_ROLE.replace("jobs", "endpoints")
TRAIN = [
    "--image",
    TRAIN_IMAGE,
    "--role",
    JOBS_ROLE,
    "--output",
    f"{BUCKET}/runs",
    "--channel",
    f"train={BUCKET}/data/train",
]
MODEL = [
    "--image",
    SERVE_IMAGE,
    "--role",
    ENDPOINTS_ROLE,
    "--model-data",
    f"{BUCKET}/runs/m/model.tar.gz",
    "--poll-seconds",
    "0.05",
]
ANSWER = json.dumps({"predictions": [{"top_k": [{"label": "Bag", "probability": 0.9}]}]})


@dataclass
class Row:
    """One command in one mode: the operations it must send (at least these), and its exit code."""

    name: str
    argv: list[str] | None = None
    operations: set[str] = field(default_factory=set)
    code: int = 0


def push_requests() -> None:
    """`push`'s AWS side without Docker: the repository, the login token, the registry's scanning, the manifest
    read-back."""
    ecr = aws.session(REGION).client("ecr")
    registry.ensure_repository(ecr, "byoc-vision-serve", registry.lifecycle_policy(30, 7))
    registry.ecr_credentials(ecr)
    registry.scanning_line(ecr, "byoc-vision")
    aws.call(
        ecr.batch_get_image,
        repositoryName="byoc-vision-serve",
        imageIds=[{"imageTag": "0.1.0"}],
        acceptedMediaTypes=list(registry.MANIFEST_TYPES),
    )


ROWS = [
    Row(
        "roles",
        [
            "roles",
            "--data",
            f"{BUCKET}/data",
            "--output",
            f"{BUCKET}/runs",
            "--async-output",
            f"{BUCKET}/async",
            "--data-capture",
            f"{BUCKET}/capture",
        ],
        {"GetCallerIdentity", "GetRole", "CreateRole", "PutRolePolicy"},
    ),
    Row(
        "upload-data",
        ["upload-data", "{photos}", f"{BUCKET}/data", "--create-bucket"],
        {"HeadBucket", "CreateBucket", "ListObjectsV2", "PutObject"},
    ),
    Row(
        "push",
        None,
        {
            "DescribeRepositories",
            "CreateRepository",
            "PutLifecyclePolicy",
            "GetAuthorizationToken",
            "GetRegistryScanningConfiguration",
            "BatchGetImage",
        },
    ),
    Row("train", ["train", "--name", "byoc-req-train", *TRAIN], {"CreateTrainingJob"}),
    Row(
        "train spot, distributed, AWS Debugger",
        [
            "train",
            "--name",
            "byoc-req-train-aws",
            *TRAIN,
            "--spot",
            "--distributed",
            "--instance-count",
            "2",
            "--sagemaker-debugger",
            "--stop-on-rule",
            "VanishingGradient",
            "--tag",
            "team=vision",
        ],
        {"CreateTrainingJob"},
    ),
    Row(
        "tune Bayesian",
        ["tune", "--name", "byoc-req-tune", *TRAIN, "--search-space", "{space}", "--early-stopping", "Auto"],
        {"CreateHyperParameterTuningJob"},
    ),
    Row(
        "tune Hyperband, warm start",
        [
            "tune",
            "--name",
            "byoc-req-tune-hb",
            *TRAIN,
            "--search-space",
            "{space}",
            "--strategy",
            "Hyperband",
            "--warm-start-from",
            "byoc-req-tune",
            "--warm-start-type",
            "TransferLearning",
        ],
        {"CreateHyperParameterTuningJob"},
    ),
    Row(
        "tune Grid",
        ["tune", "--name", "byoc-req-tune-grid", *TRAIN, "--search-space", "{grid}", "--strategy", "Grid"],
        {"CreateHyperParameterTuningJob"},
    ),
    Row(
        "deploy real-time, capture, scaling",
        [
            "deploy",
            "--name",
            "byoc-req-ep",
            *MODEL,
            "--data-capture",
            f"{BUCKET}/capture",
            "--min-instances",
            "1",
            "--max-instances",
            "3",
            "--tag",
            "team=vision",
        ],
        {
            "DescribeEndpoint",
            "CreateModel",
            "CreateEndpointConfig",
            "CreateEndpoint",
            "RegisterScalableTarget",
            "PutScalingPolicy",
        },
    ),
    Row(
        "deploy GPU, CUDA 13",
        ["deploy", "--name", "byoc-req-ep-gpu", *MODEL, "--instance-type", "ml.g4dn.2xlarge", "--image-cuda", "13.0"],
        {"CreateEndpointConfig"},
    ),
    Row(
        "deploy serverless",
        ["deploy", "--name", "byoc-req-ep-sls", *MODEL, "--serverless-memory-mb", "2048"],
        {"CreateEndpointConfig", "CreateEndpoint"},
    ),
    Row(
        "deploy asynchronous from zero",
        [
            "deploy",
            "--name",
            "byoc-req-ep-async",
            *MODEL,
            "--async-output",
            f"{BUCKET}/async",
            "--min-instances",
            "0",
            "--max-instances",
            "2",
        ],
        {"CreateEndpointConfig", "RegisterScalableTarget", "PutScalingPolicy", "PutMetricAlarm"},
    ),
    Row(
        "deploy multi-model",
        [
            "deploy",
            "--name",
            "byoc-req-ep-mme",
            *[a for a in MODEL if "model.tar.gz" not in a and a != "--model-data"],
            "--multi-model-prefix",
            f"{BUCKET}/models",
        ],
        {"CreateModel", "CreateEndpoint"},
    ),
    Row(
        "redeploy ALL_AT_ONCE",
        ["deploy", "--name", "byoc-req-ep", *MODEL],
        {"DescribeScalableTargets", "DescribeScalingPolicies", "UpdateEndpoint"},
    ),
    Row(
        "redeploy CANARY, new instance type",
        ["deploy", "--name", "byoc-req-ep", *MODEL, "--instance-type", "ml.c5.2xlarge", "--traffic", "CANARY"],
        {"DeregisterScalableTarget", "DeleteAlarms", "UpdateEndpoint", "RegisterScalableTarget", "PutScalingPolicy"},
    ),
    Row(
        "redeploy LINEAR, serverless",
        [
            "deploy",
            "--name",
            "byoc-req-ep-sls",
            *MODEL,
            "--serverless-memory-mb",
            "4096",
            "--traffic",
            "LINEAR",
            "--canary-percent",
            "20",
            "--step-wait",
            "60",
        ],
        {"UpdateEndpoint"},
    ),
    Row(
        "invoke real-time",
        ["invoke", "byoc-req-ep", "{photo}"],
        {"DescribeEndpoint", "DescribeEndpointConfig", "InvokeEndpoint"},
    ),
    Row(
        "invoke multi-model",
        ["invoke", "byoc-req-ep-mme", "{photo}", "--target-model", "bags/model.tar.gz"],
        {"InvokeEndpoint"},
    ),
    Row(
        "invoke asynchronous",
        ["invoke", "byoc-req-ep-async", "{photo}", "{large}", "--poll-seconds", "0.05", "--workers", "1"],
        {"InvokeEndpointAsync", "PutObject", "HeadObject", "GetObject"},
    ),
    Row(
        "transform images on a GPU",
        [
            "transform",
            "--name",
            "byoc-req-tf",
            *MODEL,
            "--input",
            f"{BUCKET}/in",
            "--output",
            f"{BUCKET}/out",
            "--instance-type",
            "ml.g4dn.xlarge",
            "--image-cuda",
            "12.6",
            "--concurrency",
            "2",
            "--wait",
        ],
        {"CreateModel", "CreateTransformJob", "DescribeTransformJob"},
    ),
    Row(
        "transform JSON lines",
        [
            "transform",
            "--name",
            "byoc-req-tf-lines",
            *MODEL,
            "--input",
            f"{BUCKET}/in",
            "--output",
            f"{BUCKET}/out",
            "--input-format",
            "jsonlines",
            "--max-payload-mb",
            "20",
        ],
        {"CreateTransformJob"},
    ),
    Row("status", ["status", "--running"], {"ListEndpoints", "ListTags"}),
    Row("logs", ["logs", "--endpoint", "byoc-req-ep"], {"FilterLogEvents"}, code=0),
    Row(
        "cleanup one endpoint",
        ["cleanup", "--endpoint", "byoc-req-ep-async", "--yes"],
        {"DeregisterScalableTarget", "DeleteAlarms", "DeleteEndpoint"},
    ),
    Row(
        "cleanup everything",
        ["cleanup", "--ecr", "--yes"],
        {"DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel", "DeleteRepository"},
    ),
]


def inputs(folder: Path) -> dict[str, str]:
    """The files the rows name: a photo (inline), a larger one (through S3), a dataset folder, search spaces."""
    photos = folder / "photos" / "train" / "Bag"
    photos.mkdir(parents=True)
    Image.new("RGB", (48, 48), (90, 60, 30)).save(photos / "a.png")
    Image.effect_noise((400, 400), 80).convert("RGB").save(folder / "large.png")
    (folder / "space.yaml").write_text(
        "lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}\nepochs: {type: integer, min: 1, "
        "max: 20}\n"
    )
    (folder / "grid.yaml").write_text("model: {type: categorical, values: [resnet18, resnet50]}\n")
    return {
        "{photos}": str(folder / "photos"),
        "{photo}": str(photos / "a.png"),
        "{large}": str(folder / "large.png"),
        "{space}": str(folder / "space.yaml"),
        "{grid}": str(folder / "grid.yaml"),
    }


@pytest.fixture(scope="module")
def table(aws, tmp_path_factory, capsys_module):
    """Runs every row in order (later rows update what earlier ones made); each row's exit code, output and requests."""
    names = inputs(tmp_path_factory.mktemp("requests"))
    results = {}
    for row in ROWS:
        if row.name.startswith("invoke"):
            queue_answers(aws, "endpoint-results", [{"Body": ANSWER, "ContentType": "application/json"}])
            queue_answers(aws, "async-endpoint-results", [{"data": ANSWER}, {"data": ANSWER}])
        start = len(CALLS)
        if row.argv is None:
            push_requests()
            code, out, err = 0, "", ""
        else:
            code, out, err = run_cli([names.get(a, a) for a in row.argv] + ["--region", REGION], capsys_module)
        results[row.name] = (code, out, err, CALLS[start:])
    return results


@pytest.fixture(scope="module")
def capsys_module():
    """run_cli's capture for a module-scoped fixture: what the commands printed, read and cleared after each."""

    class Captured:
        def readouterr(self) -> tuple[str, str]:
            out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
            for stream in (sys.stdout, sys.stderr):
                stream.seek(0)
                stream.truncate()
            return out, err

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield Captured()


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_request_fits_the_api(table, row):
    code, out, err, calls = table[row.name]
    assert code == row.code, f"{out}\n{err}"
    sent = {operation for _, operation, _ in calls}
    assert row.operations <= sent, f"missing {row.operations - sent}; sent {sorted(sent)}"
    for service, operation, params in calls:
        assert api_model.problems(service, operation, params) == [], (operation, params)


CAUGHT = [
    # what the launcher sent before issue 27, and what a real account answers to each
    (
        "sagemaker",
        "UpdateEndpoint",
        {
            "EndpointName": "byoc-ep",
            "EndpointConfigName": "byoc-ep-2",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE"},
                    "TerminationWaitInSeconds": 300,
                }
            },
        },
        "Missing required parameter in DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration: "
        '"WaitIntervalInSeconds"',
    ),
    (
        "sagemaker",
        "UpdateEndpoint",
        {
            "EndpointName": "byoc-ep",
            "EndpointConfigName": "byoc-ep-2",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 7200}
                }
            },
        },
        "WaitIntervalInSeconds: 7200 is above the maximum 3600",
    ),
    (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        {
            "HyperParameterTuningJobName": "byoc-t",
            "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 1}},
            "WarmStartConfig": {
                "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": f"byoc-p{i}"} for i in range(6)],
                "WarmStartType": "TransferLearning",
            },
        },
        "ParentHyperParameterTuningJobs: length 6 is above the maximum 5",
    ),
    (
        "sagemaker-runtime",
        "InvokeEndpointAsync",
        {"EndpointName": "byoc-ep", "Body": b"x" * 128_001},
        "Body: length 128001 is above the maximum 128000",
    ),
    (
        "sagemaker-runtime",
        "InvokeEndpointAsync",
        {"EndpointName": "byoc_ep", "InputLocation": "s3://b/k"},
        "'byoc_ep' does not match the pattern",
    ),
    (
        "sagemaker",
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "byoc-c",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "byoc-m",
                    "InstanceType": "ml.g6.xlarge",
                    "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-9",
                }
            ],
        },
        "is not one of al2-ami-sagemaker-inference-gpu-2",
    ),
    (
        "application-autoscaling",
        "PutScalingPolicy",
        {
            "PolicyName": "byoc-p",
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/byoc-ep/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "PolicyType": "StepScaling",
        },
        None,
    ),
]


@pytest.mark.parametrize(
    "service, operation, params, message", CAUGHT, ids=[f"{c[1]}-{i}" for i, c in enumerate(CAUGHT)]
)
def test_the_model_check_refuses_what_aws_refuses(service, operation, params, message):
    """moto took each of these; botocore's model (with the maximums, enums and patterns botocore skips) does not."""
    found = api_model.problems(service, operation, params)
    if message is None:
        assert (
            found == []
        )  # a step policy's configuration is optional in the API: the launcher always sends one (test_launch_deploy)
    else:
        assert any(message in problem for problem in found), found


def launcher_policy() -> dict:
    """The launcher policy of docs/sagemaker.md, its placeholder bucket standing for the tests' buckets."""
    text = (REPO / "docs" / "sagemaker.md").read_text()
    block = text.split("### The launcher policy", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block.replace("my-byoc-bucket", "*"))


# Actions the page names as additions for one option, beside the policy
EXTRAS = {"s3:CreateBucket": "`upload-data --create-bucket` additionally needs `s3:CreateBucket`"}


def documented_extra(action: str) -> bool:
    return action in EXTRAS and EXTRAS[action] in (REPO / "docs" / "sagemaker.md").read_text()


@pytest.mark.after_launcher_tests
def test_the_documented_policy_allows_every_call_the_launcher_made(table):
    """Each AWS operation the launcher called in this run (the table above, and every launcher test before this one)
    is allowed by the launcher policy, on the resource it touched, under its conditions."""
    policy = launcher_policy()
    calls = {(s, o, json.dumps(p, sort_keys=True, default=repr)) for s, o, p in CALLS}
    operations = {o for _, o, _ in calls}
    assert {
        "UpdateEndpoint",
        "InvokeEndpointAsync",
        "PutMetricAlarm",
        "DeleteAlarms",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    } <= operations
    refused = []
    for service, operation, params in sorted(calls):
        for need in iam_policy.needs(service, operation, json.loads(params)):
            if not iam_policy.allows(policy, need) and not documented_extra(need.action):
                refused.append(f"{operation}: {need.action} on {need.resource}")
    assert not refused, "docs/sagemaker.md's launcher policy lacks:\n" + "\n".join(sorted(set(refused)))


def test_the_policy_check_can_fail():
    """The checker refuses what the policy does not grant: another account's endpoint, an untagged create, a foreign
    role."""
    policy = launcher_policy()
    other = iam_policy.needs("sagemaker", "DeleteEndpoint", {"EndpointName": "prod-fraud"})
    untagged = iam_policy.needs(
        "sagemaker", "CreateEndpoint", {"EndpointName": "byoc-x", "EndpointConfigName": "byoc-x"}
    )
    role = iam_policy.needs(
        "sagemaker",
        "CreateModel",
        {
            "ModelName": "byoc-m",
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/admin",
            "Tags": [{"Key": "created-by", "Value": "byoc-vision"}],
        },
    )
    assert not iam_policy.allows(policy, other[0]) and not iam_policy.allows(policy, untagged[0])
    assert iam_policy.allows(policy, role[0]) and not iam_policy.allows(
        policy, role[-1]
    )  # CreateModel yes, iam:PassRole of admin no
    assert iam_policy.allows(
        policy, iam_policy.needs("sagemaker-runtime", "InvokeEndpointAsync", {"EndpointName": "byoc-ep"})[0]
    )
