"""Run the tensor rules over a folder of tensors saved by the smdebug hook, as SageMaker's rule jobs do."""

from __future__ import annotations

import logging
from pathlib import Path

from byoc_contract.rules import ERROR, ISSUES, NO_ISSUES
from train.debug.tensor_rules import RULES, BuiltinRule
from train.debug.verdicts import Verdict


def has_tensors(path: Path) -> bool:
    return path.is_dir() and any(path.glob("**/*.tfevents"))


def open_trial(path: Path):
    """The smdebug trial in ``path`` (a local folder), with smdebug's own logging kept quiet."""
    if not has_tensors(path):
        raise FileNotFoundError(
            f"{path} holds no smdebug tensors. Train with --debugger-out {path} (or download the job's "
            "DebugHookConfig S3OutputPath) and point this command at that folder."
        )
    logging.getLogger("smdebug").setLevel(logging.ERROR)
    from smdebug.trials import create_trial

    return create_trial(str(path))


def check_params(params: dict[str, dict[str, str]]) -> None:
    unknown = sorted(set(params) - set(RULES))
    if unknown:
        raise ValueError(f"--param names unknown rule(s) {', '.join(unknown)}; choose from {', '.join(RULES)}")


def first_issue(rule: BuiltinRule, steps: list[int]) -> int | None:
    """The first of the saved global ``steps`` at which the rule's condition holds (its evidence is then set).

    The rule is asked at the saved steps only, so a trial still being written never makes it wait for a step.
    """
    from smdebug.exceptions import StepUnavailable, TensorUnavailable, TensorUnavailableForStep

    for step in steps:
        try:
            if rule.invoke_at_step(step):
                return step
        except (TensorUnavailableForStep, StepUnavailable, TensorUnavailable):
            continue
    return None


def evaluate(trial, names: list[str], params: dict[str, dict[str, str]]) -> list[Verdict]:
    """One verdict per rule: the first step where its condition holds, with the evidence."""
    check_params(params)
    steps = trial.steps()
    verdicts = []
    for name in names:
        rule = RULES[name](trial, **params.get(name, {}))
        if not rule.inputs_found():
            verdicts.append(missing_inputs(name))
            continue
        step = first_issue(rule, steps)
        verdicts.append(
            Verdict(name, ISSUES, step, rule.evidence)
            if step is not None
            else Verdict(name, NO_ISSUES, evidence=f"checked {len(steps)} saved steps")
        )
    return verdicts


def missing_inputs(name: str) -> Verdict:
    return Verdict(
        name,
        ERROR,
        evidence=f"the tensors it reads were not saved: {RULES[name].SUMMARY}; see docs/debugging.md for the "
        "collections it needs",
    )
