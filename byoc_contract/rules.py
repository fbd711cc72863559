"""The in-job Debugger rules as both sides name them: rule names, the hyperparameters that choose them,
and the one verdict line the trainer prints (and the launcher, CloudWatch and the tuner's regexes read).

    rule=VanishingGradient status=IssuesFound step=120 evidence=mean |conv1.weight_grad| = 0 < 1e-07
"""
from __future__ import annotations

import re

from byoc_contract.metric_log import NUMBER

NO_ISSUES, ISSUES, ERROR, IN_PROGRESS = "NoIssuesFound", "IssuesFound", "Error", "InProgress"
STATUSES = (IN_PROGRESS, NO_ISSUES, ISSUES, ERROR)

RULE_NAMES = (
    "LossNotDecreasing", "VanishingGradient", "ExplodingTensor", "Overfit", "Overtraining",
    "PoorWeightInitialization", "ClassImbalance",
)  # fmt: skip
# The five rules of the course notebooks, plus ClassImbalance: what a job evaluates unless told otherwise.
DEFAULT_RULES = ("LossNotDecreasing", "VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization", "ClassImbalance")

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
        raise StopRuleNotJudged(f"--stop-on-rule {', '.join(missing)}: not among the evaluated rules ({', '.join(names) or 'none'}); add it to {rules_flag}")
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
    """A fixed-width table of verdicts (``rule``, ``status``, ``step``, ``evidence``), as the trainer and the launcher print it."""
    width = max([len("rule")] + [len(r["rule"]) for r in rows])
    lines = [f"{'rule':<{width}}  {'status':<13}  {'step':>6}  evidence"]
    for r in rows:
        step = "" if r.get("step") is None else r["step"]
        lines.append(f"{r['rule']:<{width}}  {r['status']:<13}  {step:>6}  {r.get('evidence', '')}")
    return "\n".join(lines)

