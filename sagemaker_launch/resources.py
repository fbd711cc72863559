"""The `status`, `logs` and `cleanup` commands: what this tool created (found by its tag), its logs, and taking it
down."""

from __future__ import annotations

import argparse
import sys
import time
from typing import NamedTuple

from sagemaker_launch import aws, scaling
from sagemaker_launch.errors import LaunchError

RUNNING = ("InProgress", "Stopping", "Creating", "Updating", "SystemUpdating", "RollingBack", "InService", "Deleting")
LOG_GROUPS = {
    "training-job": "/aws/sagemaker/TrainingJobs",
    "transform-job": "/aws/sagemaker/TransformJobs",
    "endpoint": "/aws/sagemaker/Endpoints",
}


class Kind(NamedTuple):
    list_call: str
    list_key: str
    name_key: str
    arn_key: str
    status_key: str | None
    stop_call: str | None  # jobs are stopped
    delete_call: str | None  # hosting resources are deleted
    name_param: str


KINDS = {
    "training-job": Kind(
        "list_training_jobs",
        "TrainingJobSummaries",
        "TrainingJobName",
        "TrainingJobArn",
        "TrainingJobStatus",
        "stop_training_job",
        None,
        "TrainingJobName",
    ),
    "tuning-job": Kind(
        "list_hyper_parameter_tuning_jobs",
        "HyperParameterTuningJobSummaries",
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobArn",
        "HyperParameterTuningJobStatus",
        "stop_hyper_parameter_tuning_job",
        None,
        "HyperParameterTuningJobName",
    ),
    "transform-job": Kind(
        "list_transform_jobs",
        "TransformJobSummaries",
        "TransformJobName",
        "TransformJobArn",
        "TransformJobStatus",
        "stop_transform_job",
        None,
        "TransformJobName",
    ),
    "endpoint": Kind(
        "list_endpoints",
        "Endpoints",
        "EndpointName",
        "EndpointArn",
        "EndpointStatus",
        None,
        "delete_endpoint",
        "EndpointName",
    ),
    "endpoint-config": Kind(
        "list_endpoint_configs",
        "EndpointConfigs",
        "EndpointConfigName",
        "EndpointConfigArn",
        None,
        None,
        "delete_endpoint_config",
        "EndpointConfigName",
    ),
    "model": Kind("list_models", "Models", "ModelName", "ModelArn", None, None, "delete_model", "ModelName"),
}


class Resource(NamedTuple):
    kind: str
    name: str
    status: str


def ours(client, arn: str) -> bool:
    """Whether the resource carries our created-by tag."""
    pages = client.get_paginator("list_tags").paginate(ResourceArn=arn)
    try:
        return any(tag == aws.CREATED_BY for page in pages for tag in page["Tags"])
    except client.exceptions.ClientError:
        return False


def find(client, kinds: list[str] | None = None) -> list[Resource]:
    """Every SageMaker resource of these kinds that this tool created, newest first within a kind."""
    found = []
    for kind in kinds or list(KINDS):
        spec = KINDS[kind]
        pages = client.get_paginator(spec.list_call).paginate(SortBy="CreationTime", SortOrder="Descending")
        try:
            summaries = [s for page in pages for s in page[spec.list_key]]
        except client.exceptions.ClientError as exc:
            raise LaunchError(f"cannot list {kind}s: {exc}") from None
        found += [
            Resource(kind, s[spec.name_key], s.get(spec.status_key, "-") if spec.status_key else "-")
            for s in summaries
            if ours(client, s[spec.arn_key])
        ]
    return found


def repositories(ecr) -> list[Resource]:
    """Our ECR repositories (same tag)."""
    found = []
    for page in ecr.get_paginator("describe_repositories").paginate():
        for repository in page["repositories"]:
            tags = aws.call(ecr.list_tags_for_resource, resourceArn=repository["repositoryArn"])["tags"]
            if aws.CREATED_BY in tags:
                found.append(Resource("ecr-repository", repository["repositoryName"], repository["repositoryUri"]))
    return found


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--running", action="store_true", help="only what is running (and billed) now")


def run_status(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    found = find(session.client("sagemaker"))
    if args.running:
        found = [r for r in found if r.status in RUNNING]
    if not found:
        print("nothing created by byoc-vision" + (" is running" if args.running else "") + f" in {session.region_name}")
        return
    print(f"{'kind':16} {'name':55} status")
    for resource in found:
        billed = "  <- billed while it runs" if resource.status in RUNNING else ""
        print(f"{resource.kind:16} {resource.name:55} {resource.status}{billed}")
    endpoints = [r for r in found if r.kind == "endpoint"]
    if endpoints:
        print(f"{len(endpoints)} endpoint(s) are billed every hour until deleted: `cleanup` deletes them")


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    for kind in LOG_GROUPS:
        target.add_argument(f"--{kind}", metavar="NAME")
    parser.add_argument("--follow", action="store_true", help="keep printing new lines until interrupted")
    parser.add_argument("--poll-seconds", type=float, default=5, help=argparse.SUPPRESS)


def print_new_log_lines(logs, group: str, prefix: str, seen: set[str]) -> list[str]:
    """Print the group's events in streams starting with ``prefix`` not printed yet (nothing while the group does not
    exist); returns their messages."""
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, **({"logStreamNamePrefix": prefix} if prefix else {})
    )
    printed = []
    try:
        for page in pages:
            for event in page.get("events", []):
                key = f"{event['logStreamName']}/{event['eventId']}"
                if key not in seen:
                    seen.add(key)
                    printed.append(event["message"])
                    print(f"  [{event['logStreamName'].split('/', 1)[-1]}] {event['message']}", flush=True)
    except logs.exceptions.ResourceNotFoundException:
        pass
    return printed


def run_logs(args: argparse.Namespace) -> None:
    kind, name = next((k, getattr(args, k.replace("-", "_"))) for k in LOG_GROUPS if getattr(args, k.replace("-", "_")))
    logs = aws.session(args.region).client("logs")
    group = LOG_GROUPS[kind] + (f"/{name}" if kind == "endpoint" else "")
    prefix = "" if kind == "endpoint" else f"{name}/"
    seen: set[str] = set()
    if not print_new_log_lines(logs, group, prefix, seen) and not args.follow:
        print(f"no log lines yet for {kind} {name} (group {group}); a job writes them once its instances start")
    while args.follow:
        time.sleep(args.poll_seconds)
        print_new_log_lines(logs, group, prefix, seen)


def add_cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", help="only the endpoint of exactly this name, with the endpoint config and models it runs"
    )
    parser.add_argument("--ecr", action="store_true", help="also delete our ECR repositories and their images")
    parser.add_argument("--yes", action="store_true", help="do not ask before deleting")


def endpoint_resources(client, endpoint: str) -> list[Resource]:
    """The endpoint named exactly ``endpoint`` (ours), the endpoint config it runs and that config's models (ours)."""
    described = aws.find(client.describe_endpoint, "ValidationException", EndpointName=endpoint)
    if described is None or not ours(client, described["EndpointArn"]):
        raise LaunchError(f"no endpoint named exactly {endpoint} created by byoc-vision here (`status` lists them).")
    found = [Resource("endpoint", endpoint, described["EndpointStatus"])]
    config = aws.find(
        client.describe_endpoint_config, "ValidationException", EndpointConfigName=described["EndpointConfigName"]
    )
    if config is not None and ours(client, config["EndpointConfigArn"]):
        found.append(Resource("endpoint-config", config["EndpointConfigName"], "-"))
    variants = (config or {}).get("ProductionVariants", []) + (config or {}).get("ShadowProductionVariants", [])
    for model in dict.fromkeys(v["ModelName"] for v in variants if v.get("ModelName")):
        described_model = aws.find(client.describe_model, "ValidationException", ModelName=model)
        if described_model is not None and ours(client, described_model["ModelArn"]):
            found.append(Resource("model", model, "-"))
    return found


def confirm(count: int, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise LaunchError(f"{count} resources would be deleted or stopped; pass --yes to do it without a prompt.")
    if input(f"delete or stop these {count}? [y/N] ").strip().lower() not in ("y", "yes"):
        raise LaunchError("nothing deleted.")


def take_down(client, autoscaling, cloudwatch, resource: Resource) -> str:
    """Stop a running job or delete a hosting resource; returns what happened, in words."""
    spec = KINDS[resource.kind]
    if spec.stop_call:
        if resource.status not in ("InProgress",):
            return "ended already"
        answer = aws.optional(getattr(client, spec.stop_call), **{spec.name_param: resource.name})
        return (
            "stopping"
            if answer is not None
            else f"NOT stopped: this AWS endpoint does not offer {spec.stop_call}; stop it in the console"
        )
    if resource.kind == "endpoint":  # its auto scaling target (and our alarm) go first, as AWS asks
        scaling.remove(autoscaling, cloudwatch, resource.name)
    aws.call(getattr(client, spec.delete_call), **{spec.name_param: resource.name})
    return "deleted"


def run_cleanup(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    client = session.client("sagemaker")
    found = endpoint_resources(client, args.endpoint) if args.endpoint else find(client)
    found = [r for r in found if KINDS[r.kind].delete_call or r.status == "InProgress"]
    ecr = session.client("ecr") if args.ecr else None
    if ecr:
        found += repositories(ecr)
    if not found:
        print(f"nothing to clean up in {session.region_name}")
        return
    for resource in found:
        print(f"  {resource.kind:16} {resource.name}")
    confirm(len(found), args.yes)
    autoscaling, cloudwatch = session.client("application-autoscaling"), session.client("cloudwatch")
    order = ["training-job", "tuning-job", "transform-job", "endpoint", "endpoint-config", "model", "ecr-repository"]
    failed = 0
    for resource in sorted(found, key=lambda r: order.index(r.kind)):
        if resource.kind == "ecr-repository":
            aws.call(ecr.delete_repository, repositoryName=resource.name, force=True)
            outcome = "deleted with its images"
        else:
            outcome = take_down(client, autoscaling, cloudwatch, resource)
        failed += outcome.startswith("NOT")
        print(f"{resource.kind} {resource.name}: {outcome}")
    if failed:
        raise LaunchError(
            f"{failed} could not be stopped here (see above); they stop by themselves at their max runtime."
        )
