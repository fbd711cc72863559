"""The `transform` command: a batch transform job over an S3 prefix of images or of JSON lines."""

from __future__ import annotations

import argparse

from sagemaker_launch import aws, deploy, gpu, validate
from sagemaker_launch.errors import LaunchError

MAX_PAYLOAD_TIMES_CONCURRENCY_MB = 100  # SageMaker: MaxConcurrentTransforms x MaxPayloadInMB <= 100 MB
FORMATS = {
    # one image per request: the whole object is the body
    "images": {
        "ContentType": "application/x-image",
        "SplitType": "None",
        "BatchStrategy": "SingleRecord",
        "Accept": "application/json",
        "AssembleWith": "None",
    },
    # one {"image": "<base64>"} per line: lines are batched into requests up to the payload limit, answers are lines
    # again
    "jsonlines": {
        "ContentType": "application/jsonlines",
        "SplitType": "Line",
        "BatchStrategy": "MultiRecord",
        "Accept": "application/jsonlines",
        "AssembleWith": "Line",
    },
}
TERMINAL = ("Completed", "Failed", "Stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    deploy.add_model_arguments(parser, multi_model=False)
    parser.add_argument("--input", help="s3:// prefix of the inputs")
    parser.add_argument("--output", help="s3:// prefix for the results (<input name>.out each)")
    parser.add_argument(
        "--input-format",
        choices=tuple(FORMATS),
        default="images",
        help="one image per object, or JSON lines of base64 images",
    )
    parser.add_argument("--instance-type", default="ml.m5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--max-payload-mb", type=int, default=6, help="largest request body (SageMaker allows 100)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="requests in flight per instance (0: SageMaker's default, 1); times --max-payload-mb at most 100",
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra resource tag; repeatable"
    )


def transform_ami(args: argparse.Namespace) -> str | None:
    return gpu.host_ami(args.image, args.image_cuda, args.instance_type, gpu.TRANSFORM_AMI, "batch transform")


def transform_request(args: argparse.Namespace, name: str, model: str, tags: list[dict]) -> dict:
    """The CreateTransformJob request for ``args``."""
    source = validate.s3_uri(args.input or "", "--input")
    output = validate.s3_uri(args.output or "", "--output")
    form = FORMATS[args.input_format]
    resources = {"InstanceType": args.instance_type, "InstanceCount": args.instance_count}
    host = transform_ami(args)
    if host:
        resources["TransformAmiVersion"] = host
    request = {
        "TransformJobName": name,
        "ModelName": model,
        "MaxPayloadInMB": args.max_payload_mb,
        "BatchStrategy": form["BatchStrategy"],
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{source}/"}},
            "ContentType": form["ContentType"],
            "SplitType": form["SplitType"],
        },
        "TransformOutput": {"S3OutputPath": output, "Accept": form["Accept"], "AssembleWith": form["AssembleWith"]},
        "TransformResources": resources,
        "Tags": tags,
    }
    if args.concurrency:
        request["MaxConcurrentTransforms"] = args.concurrency
    return request


def check(args: argparse.Namespace, region: str) -> None:
    deploy.check_model(args, region)
    validate.s3_uri(args.input or "", "--input")
    validate.s3_uri(args.output or "", "--output")
    validate.instance_type(args.instance_type)
    transform_ami(args)  # before the model is created: batch transform's GPU hosts run CUDA 12 at most
    if args.instance_count < 1 or args.concurrency < 0:
        raise LaunchError("--instance-count must be at least 1 and --concurrency at least 0.")
    if not 1 <= args.max_payload_mb <= MAX_PAYLOAD_TIMES_CONCURRENCY_MB:
        raise LaunchError(
            f"--max-payload-mb must be 1 to {MAX_PAYLOAD_TIMES_CONCURRENCY_MB} (got {args.max_payload_mb})."
        )
    if args.concurrency * args.max_payload_mb > MAX_PAYLOAD_TIMES_CONCURRENCY_MB:
        raise LaunchError(
            f"--concurrency {args.concurrency} x --max-payload-mb {args.max_payload_mb} = "
            f"{args.concurrency * args.max_payload_mb} MB; SageMaker allows at most "
            f"{MAX_PAYLOAD_TIMES_CONCURRENCY_MB} MB in flight per instance: lower --concurrency to "
            f"{MAX_PAYLOAD_TIMES_CONCURRENCY_MB // args.max_payload_mb} "
            f"or --max-payload-mb to {MAX_PAYLOAD_TIMES_CONCURRENCY_MB // args.concurrency}."
        )


def run(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    check(args, session.region_name)
    name = validate.job_name(args.name or aws.unique_name("byoc-transform"))
    tags = aws.tags(validate.key_values(args.tag, "--tag"), "transform-job")
    client = session.client("sagemaker")
    deploy.create_model(client, args, name, tags)
    request = transform_request(args, name, name, tags)
    arn = aws.call(client.create_transform_job, **request)["TransformJobArn"]
    print(
        f"transform job {name}\n  arn: {arn}\n  console: "
        f"{aws.console_link(session.region_name, 'transform-jobs', name)}"
    )
    print(
        f"  {args.instance_count} x {args.instance_type}, billed while it runs, it stops by itself; results: "
        f"{request['TransformOutput']['S3OutputPath']}"
    )
    if args.wait:
        job = aws.wait_for(
            client.describe_transform_job, {"TransformJobName": name}, "TransformJobStatus", TERMINAL, args.poll_seconds
        )
        if job["TransformJobStatus"] != "Completed":
            raise LaunchError(
                f"transform job {name} ended {job['TransformJobStatus']}: {job.get('FailureReason', 'no reason given')}"
            )
