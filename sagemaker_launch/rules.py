"""SageMaker Debugger and Profiler built-in rules, and the regional image that evaluates them
(``--sagemaker-debugger``)."""

from __future__ import annotations

import copy
import re

import smdebug_rulesconfig

from byoc_contract.rules import PROFILER_RULES as PROFILER_RULE_TABLE
from byoc_contract.rules import TENSOR_RULES, RuleSpec, as_rule_parameter, collections_for
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

# The profiler rules a course notebook asks for (``--profiler-rules`` names): ProfilerReport, and SageMaker's
# LowGPUUtilization with the in-job rule's parameters (byoc_contract.rules.PROFILER_RULES).
PROFILER_RULES = {"profiler_report": "ProfilerReport", "low_gpu_utilization": "LowGPUUtilization"}
COURSE_PROFILER_RULES = tuple(PROFILER_RULES)


def rule_image(region: str) -> str:
    """The built-in rule evaluator image for ``region``."""
    account = RULE_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise LaunchError(
            f"SageMaker Debugger's built-in rules are not offered in {region}; run without rules (--rules none) or "
            f"pick one of {', '.join(sorted(RULE_IMAGE_ACCOUNTS))}."
        )
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/sagemaker-debugger-rules:latest"


def _check(names: list[str], known, flag: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LaunchError(f"unknown {flag} {', '.join(unknown)}; choose from {', '.join(known)} (or none).")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def aws_rule(name: str) -> dict:
    """AWS's own configuration of a built-in Debugger rule (``smdebug-rulesconfig``, what SDK v2's ``rule_configs``
    returns): ``DebugRuleConfiguration`` and, where the rule needs them, ``CollectionConfigurations``."""
    return getattr(smdebug_rulesconfig, _snake(name))()


def aws_parameters(spec: RuleSpec) -> dict[str, object]:
    """The rule's parameters that AWS's evaluator takes (ours are AWS's names), leaving out those without a default."""
    return {k: v for k, v in spec.parameters.items() if v is not None and k not in spec.ours}


def debugger_rules(names: list[str], region: str, stop_on: list[str], job_name: str) -> list[dict]:
    """``DebugRuleConfigurations`` for the named built-in rules, AWS's configuration with the parameters of
    ``byoc_contract.rules``; those in ``stop_on`` stop the job (the StopTraining action)."""
    _check(names, TENSOR_RULES, "--rules")
    stop = smdebug_rulesconfig.ActionList(smdebug_rulesconfig.StopTraining(job_name)).serialize()  # as SDK v2 sent it
    configs = []
    for name in names:
        config = copy.deepcopy(aws_rule(name)["DebugRuleConfiguration"])
        config["RuleEvaluatorImage"] = rule_image(region)
        config["RuleParameters"].update(
            {k: as_rule_parameter(v) for k, v in aws_parameters(TENSOR_RULES[name]).items()}
        )
        if name in stop_on:
            config["RuleParameters"]["action_json"] = stop
        configs.append(config)
    return configs


def rule_collections(names: list[str], save_interval: str) -> list[dict]:
    """The hook's ``CollectionConfigurations`` for the named rules: AWS's (``relu_input`` with its regex) and the
    collections the trainer saves for them, each saved every ``save_interval`` steps, in a stable order."""
    wanted = {c: {} for c in collections_for(names)}
    for name in names:
        for collection in aws_rule(name).get("CollectionConfigurations", []):
            wanted.setdefault(collection["CollectionName"], {}).update(collection.get("CollectionParameters", {}))
    return [
        {"CollectionName": c, "CollectionParameters": {**wanted[c], "save_interval": save_interval}}
        for c in sorted(wanted)
    ]


def profiler_rules(names: list[str], region: str) -> list[dict]:
    """``ProfilerRuleConfigurations`` for the named built-in profiler rules, from AWS's configurations."""
    _check(names, PROFILER_RULES, "--profiler-rules")
    configs = []
    for name in names:
        invoke = PROFILER_RULES[name]
        ours = PROFILER_RULE_TABLE.get(invoke)
        rule = getattr(smdebug_rulesconfig, invoke)(**(aws_parameters(ours) if ours else {}))
        params = {k: as_rule_parameter(v) for k, v in rule.rule_parameters.items() if v is not None}
        configs.append(
            {"RuleConfigurationName": invoke, "RuleEvaluatorImage": rule_image(region), "RuleParameters": params}
        )
    return configs
