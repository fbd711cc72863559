"""Hyperparameter tuning jobs over our training job definition, with the search space from a YAML file."""

from __future__ import annotations

import argparse
import time

import botocore.exceptions

from byoc_contract import search_space
from byoc_contract.metric_log import METRIC_NAMES
from sagemaker_launch import aws, training, validate
from sagemaker_launch.errors import LaunchError

STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
MAX_WARM_START_PARENTS = 5  # SageMaker learns from at most 5 earlier tuning jobs
TERMINAL = ("Completed", "Failed", "Stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    training.add_arguments(parser)
    parser.add_argument(
        "--search-space",
        help="YAML: name: {type: continuous|integer|categorical, min, max, scaling} or {values: [...]}",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="Bayesian")
    parser.add_argument(
        "--objective",
        default="valid_acc",
        choices=[m for m in METRIC_NAMES if m.startswith(("valid_", "test_", "train_"))],
        help="metric to optimise",
    )
    parser.add_argument(
        "--direction",
        choices=("Maximize", "Minimize"),
        default=None,
        help="default: Minimize for losses, Maximize otherwise",
    )
    parser.add_argument("--max-jobs", type=int, default=10)
    parser.add_argument("--max-parallel-jobs", type=int, default=2)
    parser.add_argument(
        "--early-stopping",
        choices=("Auto", "Off"),
        default="Off",
        help="stop trials that do not keep up (not with Hyperband)",
    )
    parser.add_argument(
        "--hyperband-resource",
        nargs=2,
        type=int,
        metavar=("MIN", "MAX"),
        default=(1, 20),
        help="Hyperband: min and max epochs",
    )
    parser.add_argument(
        "--warm-start-from",
        action="append",
        default=[],
        metavar="TUNING_JOB",
        help="earlier tuning job to learn from; repeatable, up to 5",
    )
    parser.add_argument(
        "--warm-start-type",
        choices=("IdenticalDataAndAlgorithm", "TransferLearning"),
        default="IdenticalDataAndAlgorithm",
    )


def parameter_ranges(path: str | None) -> dict:
    """SageMaker ``ParameterRanges`` from the YAML search space (``byoc_contract.search_space`` checks each range)."""
    try:
        space = search_space.load(path)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    ranges = {"ContinuousParameterRanges": [], "IntegerParameterRanges": [], "CategoricalParameterRanges": []}
    for r in space:
        if r.kind == "categorical":
            ranges["CategoricalParameterRanges"].append({"Name": r.name, "Values": list(r.values)})
        else:
            key = "ContinuousParameterRanges" if r.kind == "continuous" else "IntegerParameterRanges"
            ranges[key].append(
                {"Name": r.name, "MinValue": str(r.low), "MaxValue": str(r.high), "ScalingType": r.scaling}
            )
    return ranges


def tuning_request(args: argparse.Namespace, region: str) -> dict:
    """The CreateHyperParameterTuningJob request; every argument is checked before AWS is called."""
    name = validate.job_name(args.name or aws.unique_name("byoc-tune"), limit=32)
    if args.sagemaker_debugger:
        raise LaunchError(
            "tuning jobs take no Debugger or Profiler configuration: leave out --sagemaker-debugger; each trial "
            "judges --rules itself."
        )
    ranges = parameter_ranges(args.search_space)
    definition, _output = training.job_definition(args, region, name)
    static = definition.pop("HyperParameters")
    tuned = {r["Name"] for group in ranges.values() for r in group}
    clash = sorted(tuned & set(static))
    if clash:
        raise LaunchError(f"{', '.join(clash)} is both tuned and fixed with --hyperparameter; drop one of them.")
    if args.max_parallel_jobs < 1 or args.max_jobs < args.max_parallel_jobs:
        raise LaunchError(
            f"--max-parallel-jobs ({args.max_parallel_jobs}) must be between 1 and --max-jobs ({args.max_jobs})."
        )
    direction = args.direction or ("Minimize" if args.objective.endswith("loss") else "Maximize")
    config = {
        "Strategy": args.strategy,
        "HyperParameterTuningJobObjective": {"Type": direction, "MetricName": args.objective},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": args.max_jobs, "MaxParallelTrainingJobs": args.max_parallel_jobs},
        "ParameterRanges": ranges,
        "TrainingJobEarlyStoppingType": args.early_stopping,
    }
    if args.strategy == "Grid":
        if ranges["ContinuousParameterRanges"] or ranges["IntegerParameterRanges"]:
            raise LaunchError(
                "--strategy Grid searches categorical ranges only; list the values to try (type: categorical)."
            )
        config["ResourceLimits"].pop("MaxNumberOfTrainingJobs")
    if args.strategy == "Hyperband":
        if args.early_stopping != "Off":
            raise LaunchError("--strategy Hyperband stops trials itself; leave --early-stopping Off.")
        low, high = args.hyperband_resource
        if not 1 <= low < high:
            raise LaunchError(f"--hyperband-resource {low} {high}: need 1 <= MIN < MAX (epochs).")
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": low, "MaxResource": high}}
    request = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {**definition, "StaticHyperParameters": static},
        "Tags": aws.tags(validate.key_values(args.tag, "--tag"), "tuning-job"),
    }
    if len(args.warm_start_from) > MAX_WARM_START_PARENTS:
        raise LaunchError(
            f"--warm-start-from names {len(args.warm_start_from)} tuning jobs; SageMaker learns from at most "
            f"{MAX_WARM_START_PARENTS}: "
            "keep the ones whose search space is closest to this one."
        )
    if args.warm_start_from:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p} for p in args.warm_start_from],
            "WarmStartType": args.warm_start_type,
        }
    return request


def trials(client, name: str) -> list[dict] | None:
    """The tuning job's training jobs, or None where the API is not offered (moto lacks it)."""
    try:
        pages = client.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=name
        )
        return [job for page in pages for job in page["TrainingJobSummaries"]]
    except botocore.exceptions.ClientError as exc:
        if aws.not_offered(exc):
            return None
        raise


def print_trials(jobs: list[dict]) -> None:
    print(f"  {'training job':40} {'status':11} {'objective':>10}  hyperparameters")
    for job in sorted(jobs, key=lambda j: j["TrainingJobName"]):
        value = job.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        shown = f"{value:.4f}" if value is not None else "-"
        params = " ".join(f"{k}={v}" for k, v in sorted(job.get("TunedHyperParameters", {}).items()))
        print(f"  {job['TrainingJobName']:40} {job['TrainingJobStatus']:11} {shown:>10}  {params}", flush=True)


def follow(client, name: str, poll_seconds: float = 30) -> dict:
    """A table of trials whenever it changes, until the tuning job ends; returns the last description."""
    shown, warned = None, False
    while True:
        job = aws.call(client.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=name)
        jobs = trials(client, name)
        if jobs is None and not warned:
            print("  (this endpoint does not list the trials; showing the counts)", flush=True)
            warned = True
        table = jobs if jobs is not None else job.get("TrainingJobStatusCounters", {})
        if table != shown:
            print(f"{name}: {job['HyperParameterTuningJobStatus']}", flush=True)
            if jobs is not None:
                print_trials(jobs)
            else:
                print(f"  trials: {table}", flush=True)
            shown = table
        if job["HyperParameterTuningJobStatus"] in TERMINAL:
            return job
        time.sleep(poll_seconds)
