"""Training jobs with our image: the CreateTrainingJob request, its creation, and following it to the end."""

from __future__ import annotations

import argparse
import time

from byoc_contract import rules as job_rules
from byoc_contract.metric_log import metric_definitions
from sagemaker_launch import aws, job_output, resources, rules, validate
from sagemaker_launch.errors import LaunchError

INPUT_MODES = ("File", "FastFile")
TERMINAL = ("Completed", "Failed", "Stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the training job definition (shared by `train` and `tune`)."""
    parser.add_argument("--image", help="training image URI in ECR (printed by `push`)")
    parser.add_argument("--role", help="SageMaker execution role ARN")
    parser.add_argument(
        "--output", help="s3://bucket/prefix for models, checkpoints, TensorBoard, Debugger and Profiler output"
    )
    parser.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME=S3URI",
        help="input channel (train, valid, test, pretrained); repeatable",
    )
    parser.add_argument(
        "--input-mode", choices=(*INPUT_MODES, "Pipe"), default="File", help="how channels reach the container"
    )
    parser.add_argument(
        "--hyperparameter",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="trainer flag without dashes; repeatable",
    )
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--volume-gb", type=int, default=50)
    parser.add_argument("--max-runtime", type=int, default=24 * 3600, help="seconds")
    parser.add_argument(
        "--spot", action="store_true", help="managed spot training (checkpoints synced to S3 make it resumable)"
    )
    parser.add_argument(
        "--max-wait",
        type=int,
        default=None,
        help="seconds to wait for spot capacity plus runtime (default: 2 x max-runtime)",
    )
    parser.add_argument(
        "--rules",
        nargs="*",
        default=list(job_rules.DEFAULT_RULES),
        help=f"Debugger rules, judged inside the job at each epoch end ({', '.join(job_rules.RULE_NAMES)}), or none",
    )
    parser.add_argument(
        "--stop-on-rule",
        nargs="*",
        default=[],
        metavar="RULE",
        help="stop training at the epoch end when one of these rules finds issues",
    )
    parser.add_argument(
        "--save-interval",
        type=int,
        default=None,
        help="save the tensors the rules read every N steps (default: 10 in the job, 100 with --sagemaker-debugger)",
    )
    parser.add_argument(
        "--sagemaker-debugger",
        action="store_true",
        help="for accounts that still have Debugger: AWS's hook config, rule jobs and Profiler instead of the in-job "
        "rules and profiling",
    )
    parser.add_argument(
        "--collections",
        nargs="*",
        default=["losses"],
        help="--sagemaker-debugger: hook collections beyond those the rules need",
    )
    parser.add_argument(
        "--profiler-rules",
        nargs="*",
        default=None,
        help="--sagemaker-debugger: built-in Profiler rules, or none (default: "
        f"{' '.join(rules.COURSE_PROFILER_RULES)})",
    )
    parser.add_argument(
        "--profiling-interval-ms",
        type=int,
        default=500,
        help="--sagemaker-debugger: system metrics interval (100, 200, 500, 1000, 5000, 60000)",
    )
    parser.add_argument(
        "--download-dir",
        default="byoc-output",
        help="--wait: where the job's output.tar.gz (rules.json, profiling report) is extracted",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="torchrun across all GPUs and instances (sagemaker_torch_distributed_enabled)",
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra resource tag; repeatable"
    )


def _names(values: list[str]) -> list[str]:
    return [] if values in ([], ["none"]) else values


def rule_selection(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``--rules`` and ``--stop-on-rule``, checked (every stop rule must be among the rules)."""
    try:
        return job_rules.selection(" ".join(args.rules), " ".join(args.stop_on_rule), "--rules")
    except ValueError as exc:
        raise LaunchError(f"{exc}.") from None


def in_job_rules(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The rule names and the trainer hyperparameters that turn the in-job rules on (``none`` with --sagemaker-debugger,
    where AWS's rule jobs judge them instead)."""
    names, stop_on = rule_selection(args)
    if args.sagemaker_debugger:
        return names, {job_rules.RULES_HYPERPARAMETER: "none"}
    if args.profiler_rules is not None:
        raise LaunchError(
            "--profiler-rules configures SageMaker's Profiler, which needs --sagemaker-debugger; the in-job profiling "
            "report is always written."
        )
    hyperparameters = {job_rules.RULES_HYPERPARAMETER: ",".join(names) or "none"}
    if stop_on:
        hyperparameters[job_rules.STOP_HYPERPARAMETER] = ",".join(stop_on)
    if args.save_interval is not None:
        hyperparameters["debugger-interval"] = str(args.save_interval)
    return names, hyperparameters


def job_definition(args: argparse.Namespace, region: str, name: str) -> tuple[dict, str]:
    """The parts of a training job that tuning jobs share, and the checked output URI; no AWS call is made."""
    image = validate.image_uri(args.image or "", region)
    role = validate.role(args.role)
    output = validate.s3_uri(args.output or "", "--output")
    validate.instance_type(args.instance_type)
    if args.input_mode == "Pipe":
        raise LaunchError(
            "--input-mode Pipe streams records through FIFOs, but the byoc-vision trainer reads image files; use "
            "FastFile to stream from S3."
        )
    channels = validate.key_values(args.channel, "--channel")
    if "train" not in channels:
        raise LaunchError("no train channel: pass --channel train=s3://<bucket>/<prefix>/train (see `upload-data`).")
    hyperparameters = {k: str(v) for k, v in validate.key_values(args.hyperparameter, "--hyperparameter").items()}
    rule_names, rule_hyperparameters = in_job_rules(args)
    for key, value in rule_hyperparameters.items():
        hyperparameters.setdefault(key, value)  # an explicit -p wins
    if args.distributed:
        hyperparameters["sagemaker_torch_distributed_enabled"] = "true"
    for count, flag in (
        (args.instance_count, "--instance-count"),
        (args.volume_gb, "--volume-gb"),
        (args.max_runtime, "--max-runtime"),
    ):
        if count < 1:
            raise LaunchError(f"{flag} must be at least 1 (got {count}).")
    stopping = {"MaxRuntimeInSeconds": args.max_runtime}
    if args.spot:
        stopping["MaxWaitTimeInSeconds"] = args.max_wait or 2 * args.max_runtime
        if stopping["MaxWaitTimeInSeconds"] < args.max_runtime:
            raise LaunchError(f"--max-wait ({args.max_wait} s) must be at least --max-runtime ({args.max_runtime} s).")
    definition = {
        "RoleArn": role,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": args.input_mode,
            "MetricDefinitions": metric_definitions() + job_rules.metric_definitions(tuple(rule_names)),
        },
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": validate.s3_uri(uri, f"channel {channel}") + "/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": args.input_mode,
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": f"{output}/models"},
        "ResourceConfig": {
            "InstanceType": args.instance_type,
            "InstanceCount": args.instance_count,
            "VolumeSizeInGB": args.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(args.spot),
        "CheckpointConfig": {"S3Uri": f"{output}/checkpoints/{name}", "LocalPath": "/opt/ml/checkpoints"},
    }
    return definition, output


def training_request(args: argparse.Namespace, region: str) -> dict:
    """The full CreateTrainingJob request for ``args``."""
    name = validate.job_name(args.name or aws.unique_name("byoc-train"))
    definition, output = job_definition(args, region, name)
    request = {"TrainingJobName": name, **definition}
    request["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] = True
    if args.sagemaker_debugger:
        request.update(sagemaker_debugger(args, region, output, name))
    else:  # Debugger is closed to new accounts and the Profiler ends 2027-06-30: the job judges and profiles itself
        request["ProfilerConfig"] = {"DisableProfiler": True}
    request["TensorBoardOutputConfig"] = {
        "S3OutputPath": f"{output}/tensorboard",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    request["Tags"] = aws.tags(validate.key_values(args.tag, "--tag"), "training-job")
    return request


def sagemaker_debugger(args: argparse.Namespace, region: str, output: str, name: str) -> dict:
    """DebugHookConfig, DebugRuleConfigurations, ProfilerConfig and ProfilerRuleConfigurations, as before Debugger
    closed."""
    debugger, stop_on = rule_selection(args)
    profiler = _names(args.profiler_rules if args.profiler_rules is not None else list(rules.COURSE_PROFILER_RULES))
    config: dict = {}
    interval = str(args.save_interval or 100)
    collections = rules.rule_collections(debugger, interval)
    asked = {c["CollectionName"] for c in collections}
    collections += [
        {"CollectionName": c, "CollectionParameters": {"save_interval": interval}}
        for c in _names(args.collections)
        if c not in asked
    ]
    if collections:
        config["DebugHookConfig"] = {
            "S3OutputPath": f"{output}/debugger",
            "LocalPath": "/opt/ml/output/tensors",
            "HookParameters": {"save_interval": interval},
            "CollectionConfigurations": sorted(collections, key=lambda c: c["CollectionName"]),
        }
    if debugger:
        config["DebugRuleConfigurations"] = rules.debugger_rules(debugger, region, stop_on, name)
    config["ProfilerConfig"] = {
        "S3OutputPath": f"{output}/profiler",
        "ProfilingIntervalInMilliseconds": args.profiling_interval_ms,
    }
    if profiler:
        config["ProfilerRuleConfigurations"] = rules.profiler_rules(profiler, region)
    return config


def follow(client, logs, name: str, poll_seconds: float = 15) -> dict:
    """Print status changes, rule statuses (AWS's rule jobs and the in-job rules' lines) and new CloudWatch log lines
    until the job ends; returns the last description."""
    seen_status, seen_rules, seen_events = None, {}, set()
    while True:
        job = aws.call(client.describe_training_job, TrainingJobName=name)
        status = (job["TrainingJobStatus"], job.get("SecondaryStatus"))
        if status != seen_status:
            print(f"{name}: {status[0]} ({status[1]})", flush=True)
            seen_status = status
        for rule in job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", []):
            if seen_rules.get(rule["RuleConfigurationName"]) != rule["RuleEvaluationStatus"]:
                seen_rules[rule["RuleConfigurationName"]] = rule["RuleEvaluationStatus"]
                print(f"  rule {rule['RuleConfigurationName']}: {rule['RuleEvaluationStatus']}", flush=True)
        for message in resources.print_new_log_lines(
            logs, resources.LOG_GROUPS["training-job"], f"{name}/", seen_events
        ):
            verdict = job_rules.parse_line(message)
            if verdict is not None:
                at = "" if verdict["step"] is None else f" at step {verdict['step']}"
                print(f"  in-job rule {verdict['rule']}: {verdict['status']}{at} ({verdict['evidence']})", flush=True)
        if job["TrainingJobStatus"] in TERMINAL:
            return job
        time.sleep(poll_seconds)


def wait_and_report(client, logs, s3, name: str, download_dir: str, poll_seconds: float = 15) -> dict:
    """Follow the job to its end, then fetch its output.tar.gz and print the rules' verdicts and the report's path."""
    job = follow(client, logs, name, poll_seconds)
    print(job_output.fetch_and_summarise(s3, job, download_dir), flush=True)
    return job
