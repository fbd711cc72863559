"""SageMaker Debugger and Profiler built-in rules, and the regional image that evaluates them (``--sagemaker-debugger``)."""
from __future__ import annotations

import json

from sagemaker_launch.errors import LaunchError

# Account of the `sagemaker-debugger-rules` ECR repository in each region (SageMaker Developer Guide,
# "Amazon SageMaker Debugger Registry URLs for Built-in Rule Evaluators").
RULE_IMAGE_ACCOUNTS = {
    "ap-east-1": "199566480951", "ap-northeast-1": "430734990657", "ap-northeast-2": "578805364391",
    "ap-south-1": "904829902805", "ap-southeast-1": "972752614525", "ap-southeast-2": "184798709955",
    "ca-central-1": "519511493484", "cn-north-1": "618459771430", "cn-northwest-1": "658757709296",
    "eu-central-1": "482524230118", "eu-north-1": "314864569078", "eu-west-1": "929884845733",
    "eu-west-2": "250201462417", "eu-west-3": "447278800020", "me-south-1": "986000313247",
    "sa-east-1": "818342061345", "us-east-1": "503895931360", "us-east-2": "915447279597",
    "us-west-1": "685455198987", "us-west-2": "895741380848",
}  # fmt: skip

# Built-in Debugger rules (by the names of byoc_contract.rules): their parameters and the hook collections they read.
DEBUGGER_RULES = {
    "LossNotDecreasing": ({"use_losses_collection": "True", "num_steps": "10", "diff_percent": "0.1", "mode": "TRAIN"}, ["losses"]),
    "VanishingGradient": ({"threshold": "0.0000001"}, ["gradients"]),
    "ExplodingTensor": ({"collection_names": "gradients,losses", "only_nan": "False"}, ["gradients", "losses"]),
    "Overfit": ({"patience_train": "5", "patience_validation": "10", "ratio_threshold": "0.1"}, ["losses"]),
    "Overtraining": ({"patience_train": "5", "patience_validation": "10", "delta": "0.01"}, ["losses"]),
    "PoorWeightInitialization": ({"activation_inputs_regex": ".*relu_input", "threshold": "10.0", "distribution_range": "0.001", "patience": "5", "steps": "10"}, ["weights", "biases"]),
    "ClassImbalance": ({"threshold_imbalance": "10", "threshold_misprediction": "0.7", "samples": "500", "argmax": "False", "labels_regex": ".*labels", "predictions_regex": ".*predictions"}, []),
}  # fmt: skip

PROFILER_RULES = {
    "profiler_report": ("ProfilerReport", {}),
    "low_gpu_utilization": ("LowGPUUtilization", {"threshold_p95": "70", "threshold_p5": "10", "window": "500", "patience": "1000"}),
}
COURSE_PROFILER_RULES = tuple(PROFILER_RULES)


def rule_image(region: str) -> str:
    """The built-in rule evaluator image for ``region``."""
    account = RULE_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise LaunchError(f"SageMaker Debugger's built-in rules are not offered in {region}; run without rules (--rules none) or pick one of {', '.join(sorted(RULE_IMAGE_ACCOUNTS))}.")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/sagemaker-debugger-rules:latest"


def _check(names: list[str], known: dict, flag: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LaunchError(f"unknown {flag} {', '.join(unknown)}; choose from {', '.join(known)} (or none).")


def debugger_rules(names: list[str], region: str, stop_on: list[str], job_name: str) -> list[dict]:
    """``DebugRuleConfigurations`` for the named built-in rules; those in ``stop_on`` stop the job (the StopTraining action)."""
    _check(names, DEBUGGER_RULES, "--rules")
    stop = json.dumps({"StopTraining": {"training_job_prefix": job_name}})
    return [
        {
            "RuleConfigurationName": name, "RuleEvaluatorImage": rule_image(region),
            "RuleParameters": {"rule_to_invoke": name, **DEBUGGER_RULES[name][0], **({"action_json": stop} if name in stop_on else {})},
        }
        for name in names
    ]  # fmt: skip


def rule_collections(names: list[str]) -> list[str]:
    """The hook collections the named rules read, in a stable order."""
    return sorted({c for n in names for c in DEBUGGER_RULES[n][1]})


def profiler_rules(names: list[str], region: str) -> list[dict]:
    """``ProfilerRuleConfigurations`` for the named built-in profiler rules."""
    _check(names, PROFILER_RULES, "--profiler-rules")
    return [
        {"RuleConfigurationName": invoke, "RuleEvaluatorImage": rule_image(region), "RuleParameters": {"rule_to_invoke": invoke, **params}}
        for invoke, params in (PROFILER_RULES[n] for n in names)
    ]
