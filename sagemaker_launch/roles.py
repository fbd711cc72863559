"""The `roles` command: the two execution roles SageMaker assumes, each with only what its side needs.

Jobs (training, tuning, batch transform) read the data and write their outputs. Endpoints only read the models (and
their asynchronous inputs), and write only their asynchronous results and captured data when they have any: a
compromised endpoint cannot rewrite a model or plant an archive where jobs and the launcher read (``train --wait``
extracts ``output.tar.gz``)."""

from __future__ import annotations

import argparse
import json

from sagemaker_launch import aws, validate
from sagemaker_launch.errors import LaunchError

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
POLICY_NAME = "byoc-vision"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="s3:// prefix of the training data (jobs read it)")
    parser.add_argument(
        "--output",
        required=True,
        help="s3:// prefix of the jobs' outputs and models (jobs write it, endpoints read it)",
    )
    parser.add_argument("--async-output", help="s3:// prefix of asynchronous endpoints' results (endpoints write it)")
    parser.add_argument("--data-capture", help="s3:// prefix of endpoints' captured requests (endpoints write it)")
    parser.add_argument(
        "--role-prefix",
        default="byoc-sagemaker",
        help="the roles are <prefix>-jobs and <prefix>-endpoints (must start with byoc-)",
    )


def prefix(uri: str, flag: str) -> tuple[str, str]:
    """(bucket, key prefix ending in / or empty) of an s3:// prefix."""
    bucket, key = validate.s3_parts(validate.s3_uri(uri, flag))
    return bucket, key.rstrip("/") + "/" if key else ""


def objects(uri: str, flag: str) -> tuple[str, str]:
    """(bucket ARN, objects-under-the-prefix ARN) of an s3:// prefix."""
    bucket, key = prefix(uri, flag)
    return f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}*"


def overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    return a[0] == b[0] and (a[1].startswith(b[1]) or b[1].startswith(a[1]))


def common_statements(region: str, account: str) -> list[dict]:
    """Pulling our images, and writing logs and metrics: what every SageMaker container of ours needs."""
    return [
        {
            "Sid": "PullOurImages",
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": f"arn:aws:ecr:{region}:{account}:repository/byoc-vision-*",
        },
        {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/*",
        },
        {
            "Sid": "Metrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
        },
    ]


def jobs_policy(args: argparse.Namespace, region: str, account: str) -> dict:
    """Training, tuning and batch transform: read the data and the models, write the outputs."""
    data_bucket, data = objects(args.data, "--data")
    output_bucket, output = objects(args.output, "--output")
    statements = [
        {
            "Sid": "Buckets",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": sorted({data_bucket, output_bucket}),
        },
        {"Sid": "ReadData", "Effect": "Allow", "Action": "s3:GetObject", "Resource": sorted({data, output})},
        {
            "Sid": "WriteOutputs",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": output,
        },
    ]
    return {"Version": "2012-10-17", "Statement": [*common_statements(region, account), *statements]}


def endpoints_policy(args: argparse.Namespace, region: str, account: str) -> dict:
    """Endpoints: read the models under --output, nothing else of the bucket; write only their own results."""
    _, models = objects(args.output, "--output")
    statements = [{"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject", "Resource": models}]
    written = [
        (uri, flag)
        for uri, flag in ((args.async_output, "--async-output"), (args.data_capture, "--data-capture"))
        if uri
    ]
    for uri, flag in written:
        if overlap(prefix(uri, flag), prefix(args.output, "--output")):
            raise LaunchError(
                f"{flag} {uri} overlaps --output {args.output}: endpoints could write where models are read; give it "
                "a prefix of its own."
            )
    if written:
        resources = [objects(uri, flag)[1] for uri, flag in written]
        statements.append(
            {
                "Sid": "WriteResults",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": resources,
            }
        )
    if (
        args.async_output
    ):  # asynchronous requests' inputs are uploaded beside their results (`invoke`), and the endpoint reads them
        statements.append(
            {
                "Sid": "ReadAsyncInputs",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": objects(args.async_output, "--async-output")[1],
            }
        )
    return {"Version": "2012-10-17", "Statement": [*common_statements(region, account), *statements]}


def ensure_role(iam, name: str, policy: dict, purpose: str) -> tuple[str, bool]:
    """(the role's ARN, whether it was created now): created with SageMaker's trust policy when missing; its inline
    policy is written either way."""
    found = aws.find(iam.get_role, "NoSuchEntity", RoleName=name)
    created = found is None
    if created:
        found = aws.call(
            iam.create_role,
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(TRUST),
            Description=purpose,
            Tags=aws.tags({}, "execution-role"),
        )
    aws.call(iam.put_role_policy, RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    return found["Role"]["Arn"], created


def run(args: argparse.Namespace) -> None:
    if not args.role_prefix.startswith("byoc-"):
        raise LaunchError(
            f"--role-prefix {args.role_prefix!r} must start with byoc- (the launcher's IAM policy passes only "
            "byoc-* roles)."
        )
    session = aws.session(args.region)
    account = aws.call(session.client("sts").get_caller_identity)["Account"]
    policies = {
        "jobs": jobs_policy(args, session.region_name, account),
        "endpoints": endpoints_policy(args, session.region_name, account),
    }
    iam = session.client("iam")
    arns = {}
    for side, purpose in (
        ("jobs", "byoc-vision training, tuning and batch transform jobs"),
        ("endpoints", "byoc-vision endpoints: read models only"),
    ):
        arns[side], created = ensure_role(iam, f"{args.role_prefix}-{side}", policies[side], purpose)
        print(f"{side}: {arns[side]} ({'created' if created else 'exists'}; policy {POLICY_NAME} written)")
    print(
        f"next: `train --role {arns['jobs']}` (and tune, transform); `deploy --role {arns['endpoints']}`. IAM roles "
        "cost nothing."
    )
