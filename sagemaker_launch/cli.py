"""``python -m sagemaker_launch <command>``: flags, an optional YAML file (``--config``), and one function per
command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sagemaker_launch import aws, deploy, invoke, publish, resources, roles, training, transform, tuning, upload
from sagemaker_launch.errors import LaunchError


def load_config(path: str | None) -> dict:
    """The YAML file's settings; its keys are the flags' names (``instance-type`` or ``instance_type``)."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise LaunchError(f"cannot read --config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LaunchError(f"--config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise LaunchError(f"--config {path} must be a mapping of flag names to values.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class CommandParser(argparse.ArgumentParser):
    """A command's parser that remembers its options (destination -> whether it takes several values), for --config."""

    def __init__(self, *args, **kwargs):
        self.options: dict[str, bool] = {}  # before argparse's own __init__, which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.options[action.dest] = kwargs.get("action") == "append" or kwargs.get("nargs") in ("*", "+")
        return action


def apply_config(parser: CommandParser, config: dict) -> None:
    """Use the YAML values as defaults (flags still win); unknown keys are refused, lists and mappings become
    repeats."""
    known = parser.options
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise LaunchError(f"--config has settings this command does not take: {', '.join(unknown)}.")
    defaults = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = [f"{k}={v}" for k, v in value.items()]
        if known[key] and not isinstance(value, list):
            value = [value]
        defaults[key] = [str(v) for v in value] if isinstance(value, list) else value
    parser.set_defaults(**defaults)


def command_train(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    request = training.training_request(args, session.region_name)
    client = session.client("sagemaker")
    arn = aws.call(client.create_training_job, **request)["TrainingJobArn"]
    name = request["TrainingJobName"]
    resources = request["ResourceConfig"]
    print(f"training job {name}\n  arn: {arn}\n  console: {aws.console_link(session.region_name, 'jobs', name)}")
    print(
        f"  runs on {resources['InstanceCount']} x "
        f"{resources['InstanceType']}{' (managed spot)' if request['EnableManagedSpotTraining'] else ''}; billed "
        "while it runs, it stops by itself"
    )
    if args.wait:
        job = training.wait_and_report(
            client, session.client("logs"), session.client("s3"), name, args.download_dir, args.poll_seconds
        )
        if job["TrainingJobStatus"] != "Completed":
            raise LaunchError(
                f"training job {name} ended {job['TrainingJobStatus']}: {job.get('FailureReason', 'no reason given')}"
            )
        print(f"model: {job['ModelArtifacts']['S3ModelArtifacts']}")


def command_tune(args: argparse.Namespace) -> None:
    session = aws.session(args.region)
    request = tuning.tuning_request(args, session.region_name)
    client = session.client("sagemaker")
    arn = aws.call(client.create_hyper_parameter_tuning_job, **request)["HyperParameterTuningJobArn"]
    name, config = request["HyperParameterTuningJobName"], request["HyperParameterTuningJobConfig"]
    limits = config["ResourceLimits"]
    print(
        f"tuning job {name}\n  arn: {arn}\n  console: "
        f"{aws.console_link(session.region_name, 'hyper-tuning-jobs', name)}"
    )
    print(
        f"  {config['Strategy']} search, {config['HyperParameterTuningJobObjective']['Type']} "
        f"{config['HyperParameterTuningJobObjective']['MetricName']}, "
        f"up to {limits.get('MaxNumberOfTrainingJobs', 'all grid')} jobs, {limits['MaxParallelTrainingJobs']} at a "
        "time; each trial is billed while it runs"
    )
    if args.wait:
        job = tuning.follow(client, name, args.poll_seconds)
        best = job.get("BestTrainingJob")
        if job["HyperParameterTuningJobStatus"] != "Completed":
            raise LaunchError(
                f"tuning job {name} ended {job['HyperParameterTuningJobStatus']}: "
                f"{job.get('FailureReason', 'no reason given')}"
            )
        if best:
            metric = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
            print(f"best training job: {best['TrainingJobName']} ({metric.get('MetricName')}={metric.get('Value')})")
            print("  " + " ".join(f"{k}={v}" for k, v in sorted(best.get("TunedHyperParameters", {}).items())))
        else:
            print("no best training job reported")


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    summary: str
    creates: bool = True  # takes --name and --wait


COMMANDS: dict[str, Command] = {
    "build": Command(
        publish.add_build_arguments, publish.run_build, "build the training and serving images locally", creates=False
    ),
    "push": Command(
        publish.add_push_arguments,
        publish.run_push,
        "push the images to ECR (repositories created when missing)",
        creates=False,
    ),
    "roles": Command(
        roles.add_arguments,
        roles.run,
        "create the execution roles: one for jobs, one for endpoints that only reads models",
        creates=False,
    ),
    "upload-data": Command(
        upload.add_arguments, upload.run, "sync a local dataset to S3 as training channels", creates=False
    ),
    "train": Command(training.add_arguments, command_train, "start a training job with our training image"),
    "tune": Command(tuning.add_arguments, command_tune, "start a hyperparameter tuning job over the training job"),
    "deploy": Command(deploy.add_arguments, deploy.run, "create or update an endpoint serving a trained model"),
    "invoke": Command(
        invoke.add_arguments, invoke.run, "send images to an endpoint and print the top labels", creates=False
    ),
    "transform": Command(transform.add_arguments, transform.run, "run a batch transform job over images in S3"),
    "status": Command(
        resources.add_status_arguments,
        resources.run_status,
        "list what this tool created, and what is billed now",
        creates=False,
    ),
    "logs": Command(
        resources.add_logs_arguments,
        resources.run_logs,
        "print a job's or an endpoint's CloudWatch log lines",
        creates=False,
    ),
    "cleanup": Command(
        resources.add_cleanup_arguments,
        resources.run_cleanup,
        "stop our jobs, delete our endpoints, configs, models (and ECR images)",
        creates=False,
    ),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser."""
    parser = argparse.ArgumentParser(prog="python -m sagemaker_launch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=CommandParser)
    subparsers = {}
    for name, command in COMMANDS.items():
        sub = subparsers[name] = commands.add_parser(name, help=command.summary, description=command.summary)
        sub.add_argument("--config", help="YAML file of settings (keys: the flags' names)")
        sub.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
        if command.creates:
            sub.add_argument("--name", help="name of what is created (default: a timestamped one)")
            sub.add_argument("--wait", action="store_true", help="follow it until it ends")
            sub.add_argument("--poll-seconds", type=float, default=15, help=argparse.SUPPRESS)
        command.add_arguments(sub)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, subparsers = build_parser()
    try:
        first = parser.parse_args(argv)
        sub = subparsers[first.command]
        apply_config(sub, load_config(first.config))
        if os.environ.get("SAGEMAKER_ROLE") and "role" in sub.options:
            sub.set_defaults(role=sub.get_default("role") or os.environ["SAGEMAKER_ROLE"])
        args = parser.parse_args(argv)
        COMMANDS[args.command].run(args)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
