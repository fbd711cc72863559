"""SageMaker Debugger's built-in tensor rules, implemented on smdebug's rule framework.

Each rule takes the parameters, with the defaults, that AWS documents for the built-in rule of the same name
(values may be strings, as SageMaker passes them). ``invoke_at_step`` returns True when the condition is
met; ``evidence`` then says what was seen. smdebug's ``invoke_rule`` drives them over the global steps.
"""

from __future__ import annotations

import numpy as np
from smdebug import modes
from smdebug.rules import Rule

from byoc_contract.rules import RULE_NAMES, TENSOR_RULES
from train.debug.curves import Point, curve, eval_batch_sizes, loss_names, passes, points, segments
from train.debug.parameters import typed


class BuiltinRule(Rule):
    """A built-in rule: typed parameters with AWS's defaults, and the evidence of the last trigger."""

    SUMMARY = ""
    STEP_LOCAL = False  # True: the verdict at a step depends on that step's values alone (checked once, in the job)

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, action_str="")
        self.params = typed(type(self).__name__, TENSOR_RULES[type(self).__name__].parameters, params)
        self.evidence = ""
        self._prepared = False
        self._saved: dict[str, set[int]] = {}

    def found(self, evidence: str) -> bool:
        self.evidence = evidence
        return True

    def invoke_at_step(self, step: int) -> bool:
        if not self._prepared:
            self.prepare()
            self._prepared = True
        return self.check(step)

    def prepare(self) -> None:
        """Read what the rule needs from the trial once (the trial is complete when rules run offline)."""

    def check(self, step: int) -> bool:
        raise NotImplementedError

    def inputs_found(self) -> bool:
        """Whether the trial holds the tensors this rule reads (otherwise its verdict is an error)."""
        return True

    def settled(self, steps: list[int]) -> bool:
        """Whether, with no issue found in these saved steps, no later step can change the verdict."""
        return False

    def saved(self, name: str, step: int) -> bool:
        """Whether anything of ``name`` (its value or reductions of it) was saved at global ``step``."""
        steps = self._saved.get(name)
        if steps is None:
            steps = self._saved[name] = set(self.base_trial.tensor(name).steps())
        return step in steps

    def value(self, name: str, step: int) -> np.ndarray | None:
        """The value of ``name`` at global ``step``, or None when it was not saved then (or only reductions of it
        were)."""
        from smdebug.exceptions import TensorUnavailableForStep

        if not self.saved(name, step):
            return None
        try:
            return np.asarray(self.base_trial.tensor(name).value(step), dtype=np.float64)
        except TensorUnavailableForStep:
            return None

    def reduction(self, name: str, step: int, kind: str) -> float | None:
        """``kind`` ("mean", "max", ...) of the absolute values of ``name`` at ``step``: the saved reduction, or
        computed from the saved value; None when neither was saved."""
        from smdebug.exceptions import TensorUnavailableForStep

        if not self.saved(name, step):
            return None
        try:
            return float(self.base_trial.tensor(name).reduction_value(step, kind, abs=True))
        except TensorUnavailableForStep:
            return None


class TensorValueRule(BuiltinRule):
    """Rules that judge every saved value of the tensors they read, one at a time."""

    STEP_LOCAL = True

    def inputs(self) -> list[str]:
        raise NotImplementedError

    def problem(self, name: str, step: int) -> str | None:
        """What is wrong with what was saved of ``name`` at ``step``, or None."""
        raise NotImplementedError

    def inputs_found(self) -> bool:
        return bool(self.inputs())

    def prepare(self) -> None:
        self.names = self.inputs()

    def check(self, step: int) -> bool:
        for name in self.names:
            problem = self.problem(name, step) if self.saved(name, step) else None
            if problem:
                return self.found(problem)
        return False


def _tensor_names(trial, collection_names: str | None, regex: str | None) -> list[str]:
    if not collection_names and not regex:
        return trial.tensor_names()
    names = set(trial.tensor_names(regex=regex)) if regex else set()
    for collection in (c.strip() for c in (collection_names or "").split(",") if c.strip()):
        names.update(trial.tensor_names(collection=collection))
    return sorted(names)


class VanishingGradient(TensorValueRule):
    SUMMARY = "a gradient tensor whose mean absolute value is below threshold"

    def inputs(self) -> list[str]:
        return self.base_trial.tensor_names(collection="gradients")

    def problem(self, name: str, step: int) -> str | None:
        mean = self.reduction(name, step, "mean")  # the in-job hook saves only this reduction after the first steps
        return (
            f"mean |{name}| = {mean:.3g} < {self.params['threshold']:g}"
            if mean is not None and mean < self.params["threshold"]
            else None
        )


class ExplodingTensor(TensorValueRule):
    SUMMARY = "NaN (or infinite) values in the saved tensors"

    def inputs(self) -> list[str]:
        return _tensor_names(self.base_trial, self.params["collection_names"], self.params["tensor_regex"])

    def problem(self, name: str, step: int) -> str | None:
        value, kind = self.value(name, step), "NaN" if self.params["only_nan"] else "NaN/inf"
        if value is None:  # only reductions saved: a NaN or an infinity shows in the largest absolute value
            peak = self.reduction(name, step, "max")
            bad = peak is not None and (np.isnan(peak) or (not self.params["only_nan"] and np.isinf(peak)))
            return f"{name}: max |value| is {peak} ({kind} among its values)" if bad else None
        bad = np.isnan(value) if self.params["only_nan"] else ~np.isfinite(value)
        return f"{name} holds {int(bad.sum())} {kind} of {value.size} values" if bad.any() else None


class LossCurveRule(BuiltinRule):
    """Rules that follow loss curves: the curves are read once, then checked at the steps they end on."""

    def losses(self) -> list[str]:
        return loss_names(
            self.base_trial, self.params.get("tensor_regex"), self.params.get("use_losses_collection", True)
        )

    def inputs_found(self) -> bool:
        return bool(self.losses())

    def prepare(self) -> None:
        self.events: dict[int, list[str]] = {}
        for name in self.losses():
            for step, message in self.follow(name):
                self.events.setdefault(step, []).append(message)

    def check(self, step: int) -> bool:
        return self.found("; ".join(self.events[step])) if step in self.events else False

    def follow(self, name: str) -> list[tuple[int, str]]:
        """(step, evidence) of every point where the condition holds for loss ``name``."""
        raise NotImplementedError


class LossNotDecreasing(LossCurveRule):
    SUMMARY = "the loss fell by less than diff_percent % over num_steps steps"

    def follow(self, name: str) -> list[tuple[int, str]]:
        mode, series = curve(self.base_trial, name, self.params["mode"])
        found, reference = [], None
        for p in series:
            if reference is None:
                reference = p
                continue
            if p.step - reference.step < self.params["num_steps"]:
                continue
            change = 100 * (p.value - reference.value) / abs(reference.value or 1e-12)
            if -change < self.params["diff_percent"]:
                kind = "rose" if change > self.params["increase_threshold_percent"] else "changed"
                found.append(
                    (
                        p.step,
                        f"{mode} {name} {kind} by {change:+.2f}% from {reference.value:.4f} (step {reference.step}) "
                        f"to {p.value:.4f}",
                    )
                )
            reference = p
        return found


class Overfit(LossCurveRule):
    SUMMARY = "validation loss more than ratio_threshold above the training loss, patience times in a row"

    def follow(self, name: str) -> list[tuple[int, str]]:
        train = points(self.base_trial, name, modes.TRAIN)
        found, streak = [], 0
        for train_mean, valid in segments(
            train, passes(points(self.base_trial, name, modes.EVAL), eval_batch_sizes(self.base_trial))
        ):
            if train_mean is None or valid.step < self.params["start_step"]:
                continue
            ratio = (valid.value - train_mean.value) / abs(train_mean.value or 1e-12)
            streak = streak + 1 if ratio > self.params["ratio_threshold"] else 0
            if streak >= self.params["patience"]:
                found.append(
                    (
                        valid.step,
                        f"validation {valid.value:.4f} vs training {train_mean.value:.4f}: ratio {ratio:.2f} > "
                        f"{self.params['ratio_threshold']:g}",
                    )
                )
        return found


def _stalls(series: list[Point], delta: float, patience: int) -> list[tuple[Point, Point]]:
    """(point, best so far) wherever ``patience`` points in a row failed to beat the best by more than delta."""
    best, stale, found = None, 0, []
    for p in series:
        if best is None or best.value - p.value > delta:
            best, stale = p, 0
            continue
        stale += 1
        if stale >= patience:
            found.append((p, best))
    return found


class Overtraining(LossCurveRule):
    SUMMARY = "training or validation loss no longer improving by delta"

    def follow(self, name: str) -> list[tuple[int, str]]:
        train = points(self.base_trial, name, modes.TRAIN)
        valid = passes(points(self.base_trial, name, modes.EVAL), eval_batch_sizes(self.base_trial))
        train_curve = [t for t, _ in segments(train, valid) if t is not None] if valid else train
        found = []
        for label, series, patience in (
            ("training", train_curve, "patience_train"),
            ("validation", valid, "patience_validation"),
        ):
            for p, best in _stalls(series, self.params["delta"], self.params[patience]):
                found.append(
                    (
                        p.step,
                        f"{label} {name} {p.value:.4f} has not improved on {best.value:.4f} (step {best.step}) by "
                        f"{self.params['delta']:g} for {self.params[patience]} evaluations",
                    )
                )
        return sorted(found)


class PoorWeightInitialization(BuiltinRule):
    SUMMARY = (
        "over the first steps: activation variances spread over layers, flat gradients, or a loss that does not fall"
    )

    def inputs_found(self) -> bool:
        return bool(self._activations() or self.base_trial.tensor_names(collection="gradients"))

    def _activations(self) -> list[str]:
        regex = self.params["activation_inputs_regex"]
        return (
            self.base_trial.tensor_names(regex=regex)
            if regex
            else self.base_trial.tensor_names(collection="relu_input")
        )

    def settled(self, steps: list[int]) -> bool:
        """Judged on the first ``steps`` training steps only: settled once a later training step is saved."""
        return any(s >= self.params["steps"] for s in self.base_trial.steps(mode=modes.TRAIN))

    def prepare(self) -> None:
        trial = self.base_trial
        early = {trial.global_step(modes.TRAIN, s) for s in trial.steps(mode=modes.TRAIN) if s < self.params["steps"]}
        self.early_steps = sorted(early)
        self.activations = self._activations()
        self.gradients = trial.tensor_names(collection="gradients")
        losses = loss_names(trial, None)
        self.losses = [p for p in points(trial, losses[0], modes.TRAIN) if p.step in early] if losses else []

    def check(self, step: int) -> bool:
        if step not in self.early_steps:
            return False
        variances = {n: float(np.var(v)) for n in self.activations if (v := self.value(n, step)) is not None}
        if len(variances) > 1:
            low, high = min(variances, key=variances.get), max(variances, key=variances.get)
            if variances[high] > self.params["threshold"] * max(variances[low], 1e-30):
                return self.found(
                    f"activation input variance ranges from {variances[low]:.3g} ({low}) to {variances[high]:.3g} "
                    f"({high}), ratio > {self.params['threshold']:g}"
                )
        for name in self.gradients:
            value = self.value(name, step)
            if value is not None and value.size > 1:
                spread = float(np.percentile(value, 95) - np.percentile(value, 5))
                if spread < self.params["distribution_range"]:
                    return self.found(
                        f"{name}: 5th-95th percentile spread {spread:.3g} < {self.params['distribution_range']:g}"
                    )
        seen = [p for p in self.losses if p.step <= step]
        if len(seen) > self.params["patience"] and min(p.value for p in seen[1:]) >= seen[0].value:
            return self.found(
                f"the training loss has not fallen below its first value {seen[0].value:.4f} in {len(seen) - 1} "
                "saved steps"
            )
        return False


class ClassImbalance(BuiltinRule):
    SUMMARY = "classes more than threshold_imbalance apart in count, or mispredicted more than threshold_misprediction"

    def _names(self) -> tuple[list[str], list[str]]:
        return self.base_trial.tensor_names(regex=self.params["labels_regex"]), self.base_trial.tensor_names(
            regex=self.params["predictions_regex"]
        )

    def inputs_found(self) -> bool:
        return all(self._names())

    def prepare(self) -> None:
        labels, predictions = self._names()
        self.labels, self.predictions = labels[0], predictions[0]
        trial = self.base_trial
        mode = modes.EVAL if trial.tensor(self.labels).steps(mode=modes.EVAL) else modes.TRAIN
        steps = [trial.global_step(mode, s) for s in trial.tensor(self.labels).steps(mode=mode)]
        self.steps = set(steps)
        # a validation pass is judged whole (it is often ordered by class); training steps one by one
        self.ready = {p.step for p in passes([Point(s, 0.0) for s in steps])} if mode == modes.EVAL else self.steps
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def check(self, step: int) -> bool:
        if step not in self.steps:
            return False
        labels = np.asarray(self.base_trial.tensor(self.labels).value(step)).reshape(-1).astype(np.int64)
        predicted = np.asarray(self.base_trial.tensor(self.predictions).value(step))
        predicted = (predicted.argmax(axis=-1) if self.params["argmax"] else predicted).reshape(-1).astype(np.int64)
        self.pending.append((labels, predicted))
        if step not in self.ready or sum(len(a) for a, _ in self.pending) < self.params["samples"]:
            return False
        labels = np.concatenate([a for a, _ in self.pending])
        predicted = np.concatenate([b for _, b in self.pending])
        self.pending = []
        classes, counts = np.unique(labels, return_counts=True)
        if counts.max() > self.params["threshold_imbalance"] * counts.min():
            return self.found(
                f"class {classes[counts.argmax()]} has {counts.max()} samples, class {classes[counts.argmin()]} "
                f"{counts.min()} (ratio > {self.params['threshold_imbalance']:g}) in {len(labels)} labels"
            )
        for c, n in zip(classes, counts, strict=False):
            wrong = float(np.mean(predicted[labels == c] != c))
            if wrong > self.params["threshold_misprediction"]:
                return self.found(
                    f"class {c} mispredicted {wrong:.0%} of {n} times (> {self.params['threshold_misprediction']:.0%})"
                )
        return False


RULES: dict[str, type[BuiltinRule]] = {
    cls.__name__: cls
    for cls in (
        LossNotDecreasing,
        VanishingGradient,
        ExplodingTensor,
        Overfit,
        Overtraining,
        PoorWeightInitialization,
        ClassImbalance,
    )
}
assert tuple(RULES) == RULE_NAMES, "byoc_contract.rules.RULE_NAMES must list the rules implemented here"
