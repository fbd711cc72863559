"""`roles`: the jobs' and the endpoints' execution roles, created in IAM (moto_server) with least privilege; the
endpoints' role reads models and cannot write them (issue 26)."""

import json
import re
from fnmatch import fnmatch

import boto3
import botocore.session
import pytest
from aws_stand_in import run_cli
from conftest import REPO

REGION = "us-east-1"
ARGS = [
    "roles",
    "--region",
    REGION,
    "--data",
    "s3://my-byoc-bucket/dogs/data",
    "--output",
    "s3://my-byoc-bucket/dogs/output",
    "--async-output",
    "s3://my-byoc-bucket/dogs/async",
    "--data-capture",
    "s3://my-byoc-bucket/dogs/capture",
]


def allowed(policy: dict, action: str, resource: str) -> bool:
    """Whether an Allow statement of ``policy`` grants ``action`` on ``resource`` (wildcards as IAM matches them)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if (
            statement["Effect"] == "Allow"
            and any(fnmatch(action, a) for a in actions)
            and any(fnmatch(resource, r) for r in resources)
        ):
            return True
    return False


def inline_policy(name: str) -> dict:
    document = boto3.client("iam", region_name=REGION).get_role_policy(RoleName=name, PolicyName="byoc-vision")[
        "PolicyDocument"
    ]
    return document if isinstance(document, dict) else json.loads(document)


def test_the_endpoints_role_reads_models_and_cannot_rewrite_them(aws, capsys):
    code, out, err = run_cli(ARGS, capsys)
    assert code == 0, err
    assert re.search(r"^jobs: arn:aws:iam::123456789012:role/byoc-sagemaker-jobs \(created", out, flags=re.M)
    assert re.search(r"^endpoints: arn:aws:iam::123456789012:role/byoc-sagemaker-endpoints \(created", out, flags=re.M)
    iam = boto3.client("iam", region_name=REGION)
    for side in ("jobs", "endpoints"):
        trust = iam.get_role(RoleName=f"byoc-sagemaker-{side}")["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    model = "arn:aws:s3:::my-byoc-bucket/dogs/output/byoc-train-1/output/model.tar.gz"
    endpoints, jobs = inline_policy("byoc-sagemaker-endpoints"), inline_policy("byoc-sagemaker-jobs")
    assert allowed(endpoints, "s3:GetObject", model) and not allowed(endpoints, "s3:PutObject", model)
    assert not allowed(
        endpoints, "s3:PutObject", "arn:aws:s3:::my-byoc-bucket/dogs/output/byoc-train-1/output/output.tar.gz"
    )  # no planted archive
    assert not allowed(endpoints, "s3:GetObject", "arn:aws:s3:::my-byoc-bucket/dogs/data/train/a.jpg")
    assert allowed(endpoints, "s3:PutObject", "arn:aws:s3:::my-byoc-bucket/dogs/async/result.out")
    assert allowed(endpoints, "s3:PutObject", "arn:aws:s3:::my-byoc-bucket/dogs/capture/AllTraffic/x.jsonl")
    assert allowed(jobs, "s3:PutObject", model) and allowed(
        jobs, "s3:GetObject", "arn:aws:s3:::my-byoc-bucket/dogs/data/train/a.jpg"
    )
    assert not allowed(jobs, "s3:PutObject", "arn:aws:s3:::my-byoc-bucket/dogs/data/train/a.jpg")
    code, out, err = run_cli(ARGS, capsys)  # again: the roles exist, their policies are written again
    assert code == 0 and out.count("(exists; policy byoc-vision written)") == 2


@pytest.mark.parametrize("flag", ["--async-output", "--data-capture"])
def test_endpoint_writes_may_not_overlap_the_models(aws, capsys, flag):
    argv = [
        "roles",
        "--region",
        REGION,
        "--data",
        "s3://b-1/data",
        "--output",
        "s3://b-1/out",
        flag,
        "s3://b-1/out/async",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and f"{flag} s3://b-1/out/async overlaps --output s3://b-1/out" in err


def docs_policy(heading: str) -> dict:
    text = (REPO / "docs" / "sagemaker.md").read_text()
    return json.loads(text.split(heading, 1)[1].split("```json", 1)[1].split("```", 1)[0])


def test_the_documented_roles_are_what_the_launcher_writes():
    """docs/sagemaker.md shows the policies `roles` writes for its example bucket, not a copy that can drift."""
    import argparse

    from sagemaker_launch import roles

    args = argparse.Namespace(
        data="s3://my-byoc-bucket/data",
        output="s3://my-byoc-bucket/output",
        async_output="s3://my-byoc-bucket/async",
        data_capture=None,
    )
    assert docs_policy("### The jobs' role") == roles.jobs_policy(args, REGION, "123456789012")
    assert docs_policy("### The endpoints' role") == roles.endpoints_policy(args, REGION, "123456789012")


def test_autoscaling_permissions_reach_only_our_sagemaker_variants(aws, capsys):
    """The launcher policy's Application Auto Scaling writes need SageMaker's namespace and variant dimension and
    our tag, which the launcher sets when it registers a target (checked against botocore's model, not moto's)."""
    policy = docs_policy("### The launcher policy")
    writes = [
        s
        for s in policy["Statement"]
        if any(a.startswith("application-autoscaling:") and "Describe" not in a for a in s["Action"])
    ]
    assert writes
    for statement in writes:
        condition = statement["Condition"]["StringEquals"]
        assert condition["application-autoscaling:service-namespace"] == "sagemaker"
        assert condition["application-autoscaling:scalable-dimension"] == "sagemaker:variant:DesiredInstanceCount"
        assert condition.get("aws:RequestTag/created-by", condition.get("aws:ResourceTag/created-by")) == "byoc-vision"
    from sagemaker_launch import scaling

    assert scaling.target_request("byoc-ep", 1, 2)["Tags"] == {"created-by": "byoc-vision"}
    model = botocore.session.get_session().get_service_model("application-autoscaling")
    assert "Tags" in model.operation_model("RegisterScalableTarget").input_shape.members
