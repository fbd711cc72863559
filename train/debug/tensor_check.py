"""Run the tensor rules over a folder of tensors saved by the smdebug hook, as SageMaker's rule jobs do."""
from __future__ import annotations

import logging
from pathlib import Path

from train.debug.tensor_rules import RULES
from train.debug.verdicts import ERROR, ISSUES, NO_ISSUES, Verdict


def open_trial(path: Path):
    """The smdebug trial in ``path`` (a local folder), with smdebug's own logging kept quiet."""
    if not path.is_dir() or not any(path.glob("**/*.tfevents")):
        raise FileNotFoundError(
            f"{path} holds no smdebug tensors. Train with --debugger-out {path} (or download the job's "
            "DebugHookConfig S3OutputPath) and point this command at that folder."
        )
    logging.getLogger("smdebug").setLevel(logging.ERROR)
    from smdebug.trials import create_trial

    return create_trial(str(path))


def evaluate(trial, names: list[str], params: dict[str, dict[str, str]]) -> list[Verdict]:
    """One verdict per rule: the first step where its condition holds, with the evidence."""
    unknown = sorted(set(params) - set(RULES))
    if unknown:
        raise ValueError(f"--param names unknown rule(s) {', '.join(unknown)}; choose from {', '.join(RULES)}")
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules import invoke_rule

    steps = trial.steps()
    verdicts = []
    for name in names:
        rule = RULES[name](trial, **params.get(name, {}))
        if not rule.inputs_found():
            verdicts.append(Verdict(name, ERROR, evidence=f"the tensors it reads were not saved: {RULES[name].SUMMARY}; see docs/debugging.md for the collections it needs"))
            continue
        try:
            invoke_rule(rule, start_step=0, end_step=steps[-1] + 1 if steps else 0, raise_eval_cond=True)
        except RuleEvaluationConditionMet as met:
            verdicts.append(Verdict(name, ISSUES, met.step, rule.evidence))
            continue
        verdicts.append(Verdict(name, NO_ISSUES, evidence=f"checked {len(steps)} saved steps"))
    return verdicts
