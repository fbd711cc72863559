"""Loss curves read from an smdebug trial: raw saved steps, validation passes and the training between them.

Per-batch losses are noisy, so the loss rules compare *validation passes* (the mean loss of one evaluation
pass, i.e. a run of consecutive EVAL steps) and the mean *training* loss between two passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from smdebug import modes

MODES = {"TRAIN": modes.TRAIN, "EVAL": modes.EVAL, "GLOBAL": modes.GLOBAL}


@dataclass(frozen=True)
class Point:
    step: int  # global step at which the value is known (the last step of a pass or segment)
    value: float
    first_step: int = -1  # first global step covered (for passes and segments)


def loss_names(trial, regex: str | None, use_losses_collection: bool = True) -> list[str]:
    """The loss tensors a rule looks at: those matching ``regex`` and/or the ``losses`` collection."""
    names = set(trial.tensor_names(regex=regex)) if regex else set()
    if use_losses_collection:
        names.update(trial.tensor_names(collection="losses"))
    return sorted(names)


def points(trial, name: str, mode) -> list[Point]:
    """Every saved value of ``name`` in ``mode``, by global step."""
    tensor = trial.tensor(name)
    saved = tensor.steps(mode=mode)
    return [Point(trial.global_step(mode, s), float(np.mean(tensor.value(s, mode=mode)))) for s in saved]


def eval_batch_sizes(trial) -> dict[int, int]:
    """Global step -> images in that EVAL batch, from the saved ``labels`` (empty when they were not saved)."""
    if "labels" not in trial.tensor_names():
        return {}
    tensor = trial.tensor("labels")
    return {
        trial.global_step(modes.EVAL, s): int(np.size(tensor.value(s, mode=modes.EVAL)))
        for s in tensor.steps(mode=modes.EVAL)
    }


def passes(eval_points: list[Point], sizes: dict[int, int] | None = None) -> list[Point]:
    """Group EVAL values whose global steps are consecutive into passes: (last step, mean loss). With ``sizes``
    (images per step), each batch's loss weighs by its images, so a pass's loss is the validation loss the trainer
    prints (a short last batch counts for what it holds)."""
    groups: list[list[Point]] = []
    for p in eval_points:
        if groups and p.step == groups[-1][-1].step + 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    sizes = sizes or {}
    return [
        Point(g[-1].step, float(np.average([p.value for p in g], weights=[sizes.get(p.step, 1) for p in g])), g[0].step)
        for g in groups
    ]


def segments(train_points: list[Point], eval_passes: list[Point]) -> list[tuple[Point | None, Point]]:
    """Pair each validation pass with the mean training loss saved since the previous pass (None if none was)."""
    pairs, previous_end = [], -1
    for p in eval_passes:
        window = [t.value for t in train_points if previous_end < t.step < p.first_step]
        pairs.append((Point(p.first_step - 1, float(np.mean(window)), previous_end + 1) if window else None, p))
        previous_end = p.step
    return pairs


def curve(trial, name: str, mode_name: str | None) -> tuple[str, list[Point]]:
    """The curve a loss rule follows: EVAL passes, else TRAIN steps, else GLOBAL (AWS's order) unless ``mode_name``."""
    for candidate in [mode_name] if mode_name else ["EVAL", "TRAIN", "GLOBAL"]:
        raw = points(trial, name, MODES[candidate])
        if raw:
            return candidate, passes(raw, eval_batch_sizes(trial)) if candidate == "EVAL" else raw
    return mode_name or "EVAL", []
