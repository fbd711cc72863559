"""Debugger rules evaluated inside the training job, on the steps the smdebug hook has saved so far.

At each epoch end the tensor rules run over the saved steps; each verdict change prints one line
(``byoc_contract.rules.format_line``) that CloudWatch, ``byoc-launch train --wait`` and the tuner's metric regexes read.
A rule named in ``stop_on`` that finds issues asks the trainer to stop. ``rules.json`` and ``rules.txt`` hold the
result."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from byoc_contract.rules import ERROR, IN_PROGRESS, ISSUES, NO_ISSUES, OUTPUT_FILE, format_line
from train.debug.tensor_check import first_issue, has_tensors, missing_inputs, open_trial
from train.debug.tensor_rules import RULES
from train.debug.verdicts import Verdict, table

log = logging.getLogger("train")
# The hook that writes the tensors lives in this process and is closed before the final evaluation: smdebug need not
# wait (1 s by default) for late writers once it sees the training-end marker.
os.environ.setdefault("SMDEBUG_TRAINING_END_DELAY_REFRESH", "0")


class InJobRules:
    """The verdicts of the job's rules, updated from the tensors saved so far."""

    def __init__(self, names: list[str], tensors: Path, stop_on: list[str]):
        self.tensors, self.stop_on = tensors, stop_on
        self.verdicts = {name: Verdict(name, IN_PROGRESS) for name in names}
        self.checked: dict[str, int] = {}  # step-local rules: the first global step not judged yet
        self.settled: set[str] = set()  # rules whose verdict no later step can change
        self.evaluations, self.seconds = 0, 0.0
        self.stopped: dict | None = None
        self._trial = None  # opened once, refreshed by smdebug as steps arrive

    def evaluate(self, final: bool = False) -> Verdict | None:
        """Judge the saved steps; returns the verdict of a ``stop_on`` rule that found issues, if any.

        ``final``: the hook is closed and every step is saved, so a rule whose tensors are absent is an error.
        """
        started = time.perf_counter()
        if self._trial is None and has_tensors(self.tensors):
            self._trial = open_trial(self.tensors)
        trial = self._trial
        steps = trial.steps() if trial is not None else []
        for name, verdict in self.verdicts.items():
            if verdict.status in (ISSUES, ERROR) or name in self.settled:
                continue  # a verdict stands at the first step its condition held; a settled one cannot change
            try:
                self._judge(name, trial, steps, final)
            except Exception as exc:  # a rule's bug or an unreadable tensor file must not fail the training it watches
                log.exception("rule %s could not be evaluated; training goes on without it", name)
                self._change(Verdict(name, ERROR, evidence=f"evaluation failed: {type(exc).__name__}: {exc}"))
        self.evaluations += 1
        self.seconds += time.perf_counter() - started
        return next((self.verdicts[n] for n in self.stop_on if self.verdicts[n].status == ISSUES), None)

    def _judge(self, name: str, trial, steps: list[int], final: bool) -> None:
        """Judge rule ``name`` on the saved ``steps`` and record its verdict."""
        rule = RULES[name](trial) if trial is not None else None
        if rule is None or not rule.inputs_found():
            if final:
                self._change(missing_inputs(name))
            return
        todo = [s for s in steps if s >= self.checked.get(name, 0)] if rule.STEP_LOCAL else steps
        step = first_issue(rule, todo)
        if step is not None:
            self._change(Verdict(name, ISSUES, step, rule.evidence))
            return
        if rule.STEP_LOCAL and steps:
            self.checked[name] = steps[-1] + 1
        if rule.settled(steps):
            self.settled.add(name)
        self._change(Verdict(name, NO_ISSUES, evidence=f"checked {len(steps)} saved steps"))

    def _change(self, verdict: Verdict) -> None:
        before = self.verdicts[verdict.rule]
        self.verdicts[verdict.rule] = verdict
        if verdict.status != before.status:
            print(format_line(verdict.rule, verdict.status, verdict.step, verdict.evidence), flush=True)

    def stop(self, verdict: Verdict, epoch: int, checkpoint_dir: Path) -> str:
        """Record that ``verdict`` stopped training after ``epoch``; returns the reason, as printed."""
        reason = (
            f"stopped by rule {verdict.rule} after epoch {epoch} (--stop-on-rule): {verdict.evidence}. The "
            "checkpoint is in "
            f"{checkpoint_dir}; the artifact holds the best epoch so far."
        )
        self.stopped = {"rule": verdict.rule, "epoch": epoch, "step": verdict.step, "reason": reason}
        print(reason, flush=True)
        return reason

    def write(self, out: Path) -> Path:
        """``rules.json`` (verdicts, the stop, evaluation cost) and ``rules.txt`` (the verdict table) in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        verdicts = list(self.verdicts.values())
        summary = {
            "rules": [v.as_dict() for v in verdicts],
            "stop_on_rule": self.stop_on,
            "stopped": self.stopped,
            "evaluations": self.evaluations,
            "evaluation_seconds": round(self.seconds, 3),
        }
        (out / OUTPUT_FILE).write_text(json.dumps(summary, indent=2))
        (out / "rules.txt").write_text(table(verdicts) + "\n")
        log.info("Debugger rules (%d evaluations, %.1f s in all):\n%s", self.evaluations, self.seconds, table(verdicts))
        return out / OUTPUT_FILE
