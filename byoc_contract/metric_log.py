"""The one metric line format: printed by the trainer, parsed by SageMaker's metric definitions.

    epoch=3 train_loss=0.4123 valid_loss=0.5012 valid_acc=0.8811

The tuner's ``MetricDefinitions`` come from ``metric_definitions()`` below, so they cannot drift from the lines.
"""

from __future__ import annotations

import math

NUMBER = r"([-+]?(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?)"
EVAL_METRICS = ("loss", "acc", "top5", "balanced_acc", "f1", "auc")
METRIC_NAMES = (
    *("train_loss", "train_acc", "lr", "epoch_seconds", "images_per_sec"),
    *(f"valid_{m}" for m in EVAL_METRICS),
    *(f"test_{m}" for m in EVAL_METRICS),
    *("temperature", "test_nll_before", "test_nll_after", "test_ece_before", "test_ece_after"),  # train.calibration
    "skipped_images",
)


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


def format_line(values: dict[str, float], epoch: int | None = None) -> str:
    """``epoch=N name=value ...`` with the names in METRIC_NAMES order; unknown names are refused."""
    unknown = set(values) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"metric names not in METRIC_NAMES: {sorted(unknown)}")
    fields = [f"epoch={epoch}"] if epoch is not None else []
    fields += [f"{name}={format_value(values[name])}" for name in METRIC_NAMES if name in values]
    return " ".join(fields)


def metric_definitions(names: tuple[str, ...] = METRIC_NAMES) -> list[dict[str, str]]:
    """SageMaker ``MetricDefinitions`` (Name, Regex) for the training job and the tuner's objective."""
    return [{"Name": name, "Regex": rf"\b{name}={NUMBER}"} for name in names]
