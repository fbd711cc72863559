"""The `deploy` command: model + endpoint config + endpoint (real-time, serverless, asynchronous or multi-model), auto
scaling, blue/green updates."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sagemaker_launch import aws, gpu, scaling, validate
from sagemaker_launch.errors import LaunchError

SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
ROUTING = ("ALL_AT_ONCE", "CANARY", "LINEAR")
MAX_WAIT_SECONDS = 3600  # a blue/green step's wait and the old fleet's termination wait
ENDPOINT_TERMINAL = ("InService", "Failed", "OutOfService")


def add_model_arguments(parser: argparse.ArgumentParser, multi_model: bool) -> None:
    """What to serve: the model source, the serving image, the role, the container's environment (shared with
    `transform`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--training-job", help="the model this training job produced")
    source.add_argument("--tuning-job", help="the model of this tuning job's best training job")
    source.add_argument("--model-data", help="s3://.../model.tar.gz")
    if multi_model:
        source.add_argument(
            "--multi-model-prefix",
            help="s3://bucket/prefix/ of model.tar.gz files: a multi-model endpoint (Mode=MultiModel)",
        )
    parser.add_argument("--image", help="serving image URI in ECR (printed by `push`)")
    parser.add_argument("--role", help="SageMaker execution role ARN")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="container environment, e.g. SERVE_RUNTIME=onnxruntime; repeatable",
    )
    parser.add_argument(
        "--image-cuda",
        help="GPU instances: the CUDA version the image was built with (12.6, 13.0, none), which picks the "
        "host's driver; "
        "default: read from the image's labels where Docker here has it",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, multi_model=True)
    parser.add_argument("--instance-type", default="ml.m5.xlarge")
    parser.add_argument(
        "--instance-count", type=int, help="instances (default: 1; on an update, as many as the endpoint runs now)"
    )
    parser.add_argument(
        "--serverless-memory-mb",
        type=int,
        help="serverless inference with this memory (1024-6144, steps of 1024); no instances",
    )
    parser.add_argument(
        "--serverless-concurrency", type=int, default=5, help="serverless: most concurrent invocations (1-200)"
    )
    parser.add_argument(
        "--async-output",
        help="asynchronous inference: s3:// prefix for results (requests are queued, scale to zero possible)",
    )
    parser.add_argument(
        "--async-concurrency", type=int, default=4, help="asynchronous: concurrent requests per instance"
    )
    parser.add_argument("--data-capture", help="capture requests and responses to this s3:// prefix")
    parser.add_argument("--capture-percent", type=int, default=100, help="data capture sampling percentage")
    parser.add_argument(
        "--min-instances", type=int, help="auto scaling: fewest instances (0 allowed for asynchronous endpoints)"
    )
    parser.add_argument("--max-instances", type=int, help="auto scaling: most instances; enables target tracking")
    parser.add_argument(
        "--target-invocations",
        type=float,
        default=100.0,
        help="auto scaling: invocations per instance per minute to hold",
    )
    parser.add_argument(
        "--target-backlog",
        type=float,
        default=5.0,
        help="auto scaling, asynchronous: queued requests per instance to hold",
    )
    parser.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds")
    parser.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds")
    parser.add_argument(
        "--traffic",
        choices=ROUTING,
        default="ALL_AT_ONCE",
        help="blue/green update of an existing endpoint: how traffic shifts",
    )
    parser.add_argument(
        "--canary-percent",
        type=int,
        default=10,
        help="percent of capacity: CANARY's first step (1-50), LINEAR's every step (10-50)",
    )
    parser.add_argument("--step-wait", type=int, default=300, help="CANARY/LINEAR: seconds between steps (0-3600)")
    parser.add_argument(
        "--termination-wait",
        type=int,
        default=300,
        help="seconds the old (blue) fleet stays up after the shift (0-3600)",
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra resource tag; repeatable"
    )


def check_model(args: argparse.Namespace, region: str) -> None:
    """The model flags' refusals that need no AWS call."""
    validate.image_uri(args.image or "", region)
    validate.role(args.role)
    validate.key_values(args.env, "--env")
    if not (args.training_job or args.tuning_job or args.model_data or getattr(args, "multi_model_prefix", None)):
        raise LaunchError(
            "which model? pass --training-job, --tuning-job or --model-data s3://.../model.tar.gz"
            + (" (or --multi-model-prefix s3://.../)" if hasattr(args, "multi_model_prefix") else "")
            + "."
        )
    if args.model_data and not validate.s3_uri(args.model_data, "--model-data").endswith(".tar.gz"):
        raise LaunchError(
            f"--model-data {args.model_data!r} must be the model.tar.gz a training job wrote "
            "(s3://.../output/model.tar.gz)."
        )


def inference_ami(args: argparse.Namespace) -> str | None:
    return gpu.host_ami(args.image, args.image_cuda, args.instance_type, gpu.INFERENCE_AMI, "SageMaker hosting")


def check_kind(args: argparse.Namespace) -> None:
    """Serverless, instances, asynchronous, multi-model: the combinations SageMaker takes."""
    for uri, flag in (
        (args.multi_model_prefix, "--multi-model-prefix"),
        (args.async_output, "--async-output"),
        (args.data_capture, "--data-capture"),
    ):
        if uri:
            validate.s3_uri(uri, flag)
    if args.serverless_memory_mb is not None:
        if args.serverless_memory_mb not in SERVERLESS_MEMORY_MB:
            raise LaunchError(
                f"--serverless-memory-mb must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} (got "
                f"{args.serverless_memory_mb})."
            )
        if not 1 <= args.serverless_concurrency <= 200:
            raise LaunchError(f"--serverless-concurrency must be 1 to 200 (got {args.serverless_concurrency}).")
        for given, what in (
            (args.multi_model_prefix, "multi-model endpoints"),
            (args.async_output, "asynchronous inference"),
            (args.data_capture, "data capture"),
            (args.max_instances, "instance auto scaling"),
        ):
            if given:
                raise LaunchError(
                    f"serverless endpoints do not support {what}; drop --serverless-memory-mb to use instances."
                )
    else:
        validate.instance_type(args.instance_type)
        if args.instance_count is not None and args.instance_count < 1:
            raise LaunchError(f"--instance-count must be at least 1 (got {args.instance_count}).")
        inference_ami(args)  # before anything is created: a GPU host's driver must fit the image
    if args.async_output and args.multi_model_prefix:
        raise LaunchError("asynchronous endpoints cannot be multi-model; deploy them separately.")
    if not 0 < args.capture_percent <= 100:
        raise LaunchError(f"--capture-percent must be 1 to 100 (got {args.capture_percent}).")


def check_scaling(args: argparse.Namespace) -> None:
    """Auto scaling bounds and targets."""
    if (args.min_instances is None) != (args.max_instances is None):
        raise LaunchError("auto scaling needs both --min-instances and --max-instances.")
    if args.max_instances is None:
        return
    lowest = 0 if args.async_output else 1
    if not lowest <= args.min_instances <= args.max_instances:
        raise LaunchError(
            f"auto scaling needs {lowest} <= --min-instances <= --max-instances (got {args.min_instances}, "
            f"{args.max_instances})"
            + ("; only asynchronous endpoints scale to zero." if args.min_instances == 0 else ".")
        )
    if args.instance_count is not None and not max(1, args.min_instances) <= args.instance_count <= args.max_instances:
        raise LaunchError(
            f"--instance-count {args.instance_count} is outside --min-instances {args.min_instances} to "
            f"--max-instances {args.max_instances}."
        )
    if (args.target_backlog if args.async_output else args.target_invocations) <= 0:
        raise LaunchError(f"{'--target-backlog' if args.async_output else '--target-invocations'} must be above 0.")


def check_traffic(args: argparse.Namespace) -> None:
    """The blue/green update's steps, as the API bounds them."""
    low = 10 if args.traffic == "LINEAR" else 1  # AWS: a linear step is 10-50 % of the fleet, a canary at most 50 %
    if not low <= args.canary_percent <= 50:
        raise LaunchError(
            f"--canary-percent must be {low} to 50 for --traffic {args.traffic} (got {args.canary_percent})."
        )
    for value, flag in ((args.step_wait, "--step-wait"), (args.termination_wait, "--termination-wait")):
        if not 0 <= value <= MAX_WAIT_SECONDS:
            raise LaunchError(f"{flag} must be 0 to {MAX_WAIT_SECONDS} seconds (got {value}).")


def check(args: argparse.Namespace, region: str) -> None:
    """Every refusal that needs no AWS call."""
    check_model(args, region)
    check_kind(args)
    check_scaling(args)
    check_traffic(args)


def model_data(client, args: argparse.Namespace) -> str:
    """The S3 URI of what to deploy, resolving a training job or a tuning job's best one."""
    if getattr(args, "multi_model_prefix", None):
        return validate.s3_uri(args.multi_model_prefix, "--multi-model-prefix") + "/"
    if args.model_data:
        return args.model_data
    job_name = args.training_job
    if args.tuning_job:
        tuning = aws.call(client.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=args.tuning_job)
        if "BestTrainingJob" not in tuning:
            raise LaunchError(
                f"tuning job {args.tuning_job} has no best training job yet "
                f"({tuning['HyperParameterTuningJobStatus']}); wait for it (`tune --wait`)."
            )
        job_name = tuning["BestTrainingJob"]["TrainingJobName"]
        print(f"best training job of {args.tuning_job}: {job_name}")
    job = aws.call(client.describe_training_job, TrainingJobName=job_name)
    if job["TrainingJobStatus"] != "Completed":
        raise LaunchError(
            f"training job {job_name} is {job['TrainingJobStatus']}, not Completed: it has no model to deploy yet "
            "(`train --wait` follows it)."
        )
    return job["ModelArtifacts"]["S3ModelArtifacts"]


# What SageMaker lets one request carry, by endpoint kind: the container is told, so its own limits are the same.
PAYLOAD_MB = {"real-time": 6, "serverless": 4, "asynchronous": 1024}
ASYNC_TIMEOUT_SECONDS = 3600  # an asynchronous request may take up to an hour


def endpoint_kind(args: argparse.Namespace) -> str:
    """real-time, serverless or asynchronous (``deploy``), or batch transform (``transform``'s --max-payload-mb)."""
    if getattr(args, "max_payload_mb", None) is not None:
        return "batch transform"
    if getattr(args, "serverless_memory_mb", None) is not None:
        return "serverless"
    return "asynchronous" if getattr(args, "async_output", None) else "real-time"


def limits_environment(args: argparse.Namespace) -> dict[str, str]:
    """The container's payload (and, for asynchronous endpoints, time) limits for this kind of endpoint."""
    kind = endpoint_kind(args)
    environment = {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(args.max_payload_mb if kind == "batch transform" else PAYLOAD_MB[kind])
    }
    if kind == "asynchronous":
        environment.update(
            SAGEMAKER_MODEL_SERVER_TIMEOUT=str(ASYNC_TIMEOUT_SECONDS),
            SERVE_BODY_READ_TIMEOUT_SECONDS="600",
            SERVE_MAX_UPLOAD_BUFFER_MB=str(2 * PAYLOAD_MB[kind]),
        )
    return environment


def create_model(client, args: argparse.Namespace, name: str, tags: list[dict]) -> None:
    """CreateModel with our serving image over the model ``args`` names."""
    data = model_data(client, args)
    environment = {**limits_environment(args), **validate.key_values(args.env, "--env")}  # --env wins
    container = {"Image": args.image, "ModelDataUrl": data, "Environment": environment}
    if getattr(args, "multi_model_prefix", None):
        container.update(Mode="MultiModel", Environment={"SAGEMAKER_MULTI_MODEL": "true", **environment})
    aws.call(client.create_model, ModelName=name, PrimaryContainer=container, ExecutionRoleArn=args.role, Tags=tags)
    print(f"model {name}: {data}")


@dataclass(frozen=True)
class Running:
    """The endpoint as it runs now, for an update: its config, instance type (None: serverless) and instance count."""

    config: str
    instance_type: str | None
    instance_count: int | None


def running(client, endpoint: str) -> Running | None:
    """What ``endpoint`` runs now, or None when it does not exist."""
    described = aws.find(client.describe_endpoint, "ValidationException", EndpointName=endpoint)
    if described is None:
        return None
    config = aws.call(client.describe_endpoint_config, EndpointConfigName=described["EndpointConfigName"])[
        "ProductionVariants"
    ][0]
    now = described.get("ProductionVariants", [{}])[0]
    count = now.get("CurrentInstanceCount", now.get("DesiredInstanceCount", config.get("InitialInstanceCount")))
    return Running(described["EndpointConfigName"], config.get("InstanceType"), count)


def instance_count(args: argparse.Namespace, now: Running | None) -> int:
    """--instance-count, else (on an update) the count the endpoint runs now, so a redeploy does not undo scaling."""
    if args.instance_count is not None:
        return args.instance_count
    if now is not None and now.instance_count:
        return now.instance_count
    return max(1, args.min_instances or 1)


def variant(args: argparse.Namespace, model: str, count: int) -> dict:
    production = {"VariantName": scaling.VARIANT, "ModelName": model, "InitialVariantWeight": 1.0}
    if args.serverless_memory_mb is not None:
        production["ServerlessConfig"] = {
            "MemorySizeInMB": args.serverless_memory_mb,
            "MaxConcurrency": args.serverless_concurrency,
        }
    else:
        production.update(InstanceType=args.instance_type, InitialInstanceCount=count)
        host = inference_ami(args)
        if host:
            production["InferenceAmiVersion"] = host
    return production


def endpoint_config(args: argparse.Namespace, name: str, model: str, count: int, tags: list[dict]) -> dict:
    """The CreateEndpointConfig request."""
    request = {"EndpointConfigName": name, "ProductionVariants": [variant(args, model, count)], "Tags": tags}
    if args.data_capture:
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": args.capture_percent,
            "DestinationS3Uri": validate.s3_uri(args.data_capture, "--data-capture"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json", "application/jsonlines"]},
        }
    if args.async_output:
        output = validate.s3_uri(args.async_output, "--async-output")
        request["AsyncInferenceConfig"] = {
            "OutputConfig": {"S3OutputPath": f"{output}/results", "S3FailurePath": f"{output}/failures"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": args.async_concurrency},
        }
    return request


def deployment_config(args: argparse.Namespace) -> dict:
    """Blue/green: the new fleet comes up beside the old, traffic shifts as asked, the old stays ``termination_wait`` s
    for rollback."""
    routing = {
        "Type": args.traffic,
        "WaitIntervalInSeconds": args.step_wait if args.traffic != "ALL_AT_ONCE" else 0,
    }  # required by the API in every mode
    if args.traffic == "CANARY":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": args.canary_percent}
    elif args.traffic == "LINEAR":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": args.canary_percent}
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": args.termination_wait,
        }
    }


def scaling_plan(args: argparse.Namespace) -> scaling.Plan | None:
    """What --min-instances/--max-instances ask the variant's auto scaling to hold (None: not asked)."""
    if args.max_instances is None:
        return None
    asynchronous = bool(args.async_output)
    return scaling.Plan(
        args.min_instances,
        args.max_instances,
        args.target_backlog if asynchronous else args.target_invocations,
        args.scale_in_cooldown,
        args.scale_out_cooldown,
        asynchronous,
    )


def wait_in_service(client, name: str, poll_seconds: float) -> dict:
    endpoint = aws.wait_for(
        client.describe_endpoint, {"EndpointName": name}, "EndpointStatus", ENDPOINT_TERMINAL, poll_seconds
    )
    if endpoint["EndpointStatus"] != "InService":
        raise LaunchError(
            f"endpoint {name} is {endpoint['EndpointStatus']}: {endpoint.get('FailureReason', 'no reason given')} "
            f"(`logs --endpoint {name}` shows the container's log)."
        )
    return endpoint


def cost_line(args: argparse.Namespace, count: int) -> str:
    if args.serverless_memory_mb is not None:
        return (
            f"serverless ({args.serverless_memory_mb} MB): billed per request (duration x memory), nothing while idle"
        )
    shown = f"{args.min_instances}-{args.max_instances}" if args.max_instances is not None else str(count)
    line = (
        f"{shown} x {args.instance_type}: billed every hour while the endpoint exists, called or not "
        f"({24 * (args.max_instances or count)} instance-hours a day at most)"
    )
    if args.async_output and args.min_instances == 0:
        line += "; scales to zero instances when its queue is empty"
    return line


def update(session, args: argparse.Namespace, endpoint: str, config: str, now: Running) -> scaling.Registered | None:
    """UpdateEndpoint (blue/green) to ``config``. AWS refuses to change the instance type of a variant registered with
    auto scaling, so its scaling is taken off first and returned, to be put back once the update is in service; if
    the update is refused, it is put back at once."""
    client, autoscaling, cloudwatch = (
        session.client("sagemaker"),
        session.client("application-autoscaling"),
        session.client("cloudwatch"),
    )
    saved = scaling.registered(autoscaling, endpoint) if now.instance_type else None
    new_type = None if args.serverless_memory_mb is not None else args.instance_type
    moving = saved is not None and new_type != now.instance_type
    if moving:
        scaling.remove(autoscaling, cloudwatch, endpoint)
        print(
            f"  auto scaling ({scaling.describe(saved)}) deregistered: AWS changes the instance type "
            f"({now.instance_type} -> {new_type}) "
            "only of a variant without it; it is registered again once the update is in service"
        )
    try:
        aws.call(
            client.update_endpoint,
            EndpointName=endpoint,
            EndpointConfigName=config,
            DeploymentConfig=deployment_config(args),
        )
    except LaunchError as exc:
        if moving:
            scaling.restore(autoscaling, cloudwatch, endpoint, saved)
            print(f"  auto scaling put back as it was: {scaling.describe(saved)}")
        raise LaunchError(
            f"{exc}. {endpoint} still runs {now.config}; endpoint config {config} and its model were created "
            "(`cleanup` removes them)."
        ) from None
    print(
        f"endpoint {endpoint}: blue/green update from {now.config} to {config} ({args.traffic}, old fleet kept "
        f"{args.termination_wait} s)"
    )
    return saved if moving and new_type else None


def run(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    region = session.region_name
    check(args, region)
    endpoint = validate.job_name(args.name or aws.unique_name("byoc-endpoint"))
    tags = aws.tags(validate.key_values(args.tag, "--tag"), "endpoint")
    client = session.client("sagemaker")
    now = running(client, endpoint)
    count = instance_count(args, now)
    model = config = (
        f"{endpoint[:47]}-{aws.stamp()}"  # each deploy makes its own model and config, so an update can roll back
    )
    create_model(client, args, model, tags)
    aws.call(client.create_endpoint_config, **endpoint_config(args, config, model, count, tags))
    print(
        f"endpoint config {config}"
        + (
            f" ({count} instances, as the endpoint runs now)"
            if now and args.instance_count is None and now.instance_count
            else ""
        )
    )
    pending = None
    if now is not None:
        pending = update(session, args, endpoint, config, now)
    else:
        arn = aws.call(client.create_endpoint, EndpointName=endpoint, EndpointConfigName=config, Tags=tags)[
            "EndpointArn"
        ]
        print(f"endpoint {endpoint}\n  arn: {arn}")
    print(f"  console: {aws.console_link(region, 'endpoints', endpoint)}")
    plan = scaling_plan(args)
    if args.wait or plan or pending:  # scaling can be registered only once the endpoint is InService
        wait_in_service(client, endpoint, args.poll_seconds)
    autoscaling, cloudwatch = session.client("application-autoscaling"), session.client("cloudwatch")
    if plan:
        scaling.apply(autoscaling, cloudwatch, endpoint, plan)
        held = (
            f"{plan.target:g} queued requests per instance, and one instance when requests wait with none running"
            if plan.asynchronous
            else f"{plan.target:g} invocations per instance per minute"
        )
        print(f"  auto scaling: {plan.min_instances}-{plan.max_instances} instances, holding {held}")
    elif pending:
        scaling.restore(autoscaling, cloudwatch, endpoint, pending)
        print(f"  auto scaling registered again: {scaling.describe(pending)}")
    print(f"  {cost_line(args, count)}; `cleanup --endpoint {endpoint}` deletes it")
    print(
        f"next: python -m sagemaker_launch invoke {endpoint} <image.jpg>"
        + (" --target-model <name>.tar.gz" if args.multi_model_prefix else "")
    )
