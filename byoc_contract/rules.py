"""The Debugger and profiler rules as both sides name them: each rule's parameters and collections (one table, AWS's
names), the hyperparameters that choose them, and the one verdict line the trainer prints (and the launcher, CloudWatch
and the tuner's regexes read).

    rule=VanishingGradient status=IssuesFound step=120 evidence=mean |conv1.weight_grad| = 0 < 1e-07
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from byoc_contract.metric_log import NUMBER

NO_ISSUES, ISSUES, ERROR, IN_PROGRESS = "NoIssuesFound", "IssuesFound", "Error", "InProgress"
STATUSES = (IN_PROGRESS, NO_ISSUES, ISSUES, ERROR)


@dataclass(frozen=True)
class RuleSpec:
    """A built-in rule as AWS documents it: its parameters (AWS's names and defaults), the hook collections the rule
    reads (what the trainer saves for it and the launcher asks SageMaker's hook for), and parameters only we take."""

    parameters: Mapping[str, object]
    collections: tuple[str, ...] = ()
    ours: tuple[str, ...] = ()  # not AWS's: never sent to SageMaker's rule evaluator


# The Debugger rules (SageMaker Developer Guide, "List of Debugger built-in rules"); train/debug/tensor_rules.py
# implements them, sagemaker_launch/rules.py asks AWS for them, docs/debugging.md documents them (tests hold all three).
TENSOR_RULES: Mapping[str, RuleSpec] = MappingProxyType(
    {
        "LossNotDecreasing": RuleSpec(
            {
                "tensor_regex": None,
                "use_losses_collection": True,
                "num_steps": 10,
                "diff_percent": 0.1,
                "increase_threshold_percent": 5.0,
                "mode": None,
            },
            ("losses",),
        ),
        "VanishingGradient": RuleSpec({"threshold": 1e-7}, ("gradients",)),
        "ExplodingTensor": RuleSpec(
            {"collection_names": None, "tensor_regex": None, "only_nan": False}, ("gradients", "losses")
        ),
        "Overfit": RuleSpec(
            {"tensor_regex": None, "start_step": 0, "patience": 1, "ratio_threshold": 0.1}, ("losses",)
        ),
        "Overtraining": RuleSpec(
            {"tensor_regex": None, "patience_train": 5, "patience_validation": 10, "delta": 0.01}, ("losses",)
        ),
        "PoorWeightInitialization": RuleSpec(
            {
                "activation_inputs_regex": None,
                "threshold": 10.0,
                "distribution_range": 0.001,
                "patience": 5,
                "steps": 10,
            },
            ("relu_input", "gradients", "losses"),
        ),
        "ClassImbalance": RuleSpec(
            {
                "threshold_imbalance": 10.0,
                "threshold_misprediction": 0.7,
                "samples": 500,
                "argmax": False,
                "labels_regex": ".*labels",
                "predictions_regex": ".*predictions",
            },
            ("labels", "predictions"),
        ),
    }
)

# The profiler rules judged in the job (train/debug/profiler_rules.py), with SageMaker's names and defaults.
PROFILER_RULES: Mapping[str, RuleSpec] = MappingProxyType(
    {
        "LowGPUUtilization": RuleSpec({"threshold_p95": 70.0, "threshold_p5": 10.0, "window": 500, "patience": 1000}),
        "BatchSize": RuleSpec(
            {
                "cpu_threshold_p95": 70.0,
                "gpu_threshold_p95": 70.0,
                "gpu_memory_threshold_p95": 70.0,
                "patience": 1000,
                "window": 500,
            }
        ),
        "CPUBottleneck": RuleSpec({"threshold": 50.0, "gpu_threshold": 10.0, "cpu_threshold": 90.0, "patience": 1000}),
        "IOBottleneck": RuleSpec({"threshold": 50.0, "gpu_threshold": 10.0, "io_threshold": 50.0, "patience": 1000}),
        "StepOutlier": RuleSpec({"stddev": 3.0, "mode": None, "n_outliers": 10}),
        "Dataloader": RuleSpec({"max_threshold": 200.0, "wait_threshold": 50.0}, ours=("wait_threshold",)),
    }
)

RULE_NAMES = tuple(TENSOR_RULES)
# The five rules of the course notebooks, plus ClassImbalance: what a job evaluates unless told otherwise.
DEFAULT_RULES = (
    "LossNotDecreasing",
    "VanishingGradient",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "ClassImbalance",
)


def collections_for(names: list[str]) -> list[str]:
    """The hook collections the named Debugger rules read, in a stable order (the trainer saves them, the launcher
    asks SageMaker's hook for them)."""
    return sorted({c for name in names for c in TENSOR_RULES[name].collections})


def as_rule_parameter(value: object) -> str:
    """A parameter value as SageMaker's rule evaluator takes it (a string; booleans as ``True``/``False``)."""
    return str(value) if not isinstance(value, float) else f"{value:g}"


# Trainer hyperparameters (``--debugger-rules``, ``--stop-on-rule``), as the launcher sends them.
RULES_HYPERPARAMETER = "debugger-rules"
STOP_HYPERPARAMETER = "stop-on-rule"
OUTPUT_FILE = "rules.json"  # in the job's output data folder, beside profiler-report.html

LINE = re.compile(r"^rule=(?P<rule>\w+) status=(?P<status>\w+) step=(?P<step>-|\d+) evidence=(?P<evidence>.*)$")


def rule_names(text: str) -> list[str]:
    """``all``, ``none`` (no rules) or a comma/space list of rule names (any case, - or _ ignored)."""
    key = text.strip().lower()
    if key == "all":
        return list(RULE_NAMES)
    if key in ("none", ""):
        return []
    by_key = {re.sub(r"[-_]", "", name.lower()): name for name in RULE_NAMES}
    names = []
    for item in (t for t in re.split(r"[,\s]+", text) if t):
        name = by_key.get(re.sub(r"[-_]", "", item.lower()))
        if name is None:
            raise ValueError(f"unknown rule '{item}'; choose from {', '.join(RULE_NAMES)}, all or none")
        if name not in names:
            names.append(name)
    return names


class StopRuleNotJudged(ValueError):
    """A stop-on-rule name that is not among the rules being judged."""


def selection(rules: str, stop_on: str, rules_flag: str) -> tuple[list[str], list[str]]:
    """The rules to judge and those that stop training (each as ``rule_names`` reads them); every stop rule must be
    judged. ``rules_flag`` names the setting to add a missing one to, in the error."""
    names, stops = rule_names(rules), rule_names(stop_on)
    missing = [n for n in stops if n not in names]
    if missing:
        raise StopRuleNotJudged(
            f"--stop-on-rule {', '.join(missing)}: not among the evaluated rules ({', '.join(names) or 'none'}); add "
            f"it to {rules_flag}"
        )
    return names, stops


def format_line(rule: str, status: str, step: int | None, evidence: str) -> str:
    """One verdict change as a single line (newlines in the evidence are folded)."""
    if rule not in RULE_NAMES or status not in STATUSES:
        raise ValueError(f"unknown rule or status: {rule} {status}")
    return f"rule={rule} status={status} step={'-' if step is None else step} evidence={' '.join(evidence.split())}"


def parse_line(line: str) -> dict | None:
    """The fields of a verdict line (``step`` None when not known), or None for any other line."""
    match = LINE.match(line.strip())
    if match is None:
        return None
    fields = match.groupdict()
    fields["step"] = None if fields["step"] == "-" else int(fields["step"])
    return fields


def metric_definitions(names: tuple[str, ...] = RULE_NAMES) -> list[dict[str, str]]:
    """``rule_<Name>``: the step at which the rule found issues, for SageMaker's metrics and the tuner."""
    return [{"Name": f"rule_{name}", "Regex": rf"\brule={name} status={ISSUES} step={NUMBER}"} for name in names]


def verdict_table(rows: list[dict]) -> str:
    """A fixed-width table of verdicts (``rule``, ``status``, ``step``, ``evidence``), as the trainer and the launcher
    print it."""
    width = max([len("rule")] + [len(r["rule"]) for r in rows])
    lines = [f"{'rule':<{width}}  {'status':<13}  {'step':>6}  evidence"]
    for r in rows:
        step = "" if r.get("step") is None else r["step"]
        lines.append(f"{r['rule']:<{width}}  {r['status']:<13}  {step:>6}  {r.get('evidence', '')}")
    return "\n".join(lines)
