"""Calibrated probabilities (numpy only): temperature scaling fitted on held-out logits, the expected calibration
error and reliability bins to report it, and the operating point of a two-class screen."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINS = 15
LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def scaled_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under softmax(logits / temperature)."""
    scaled = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-scaled[np.arange(len(targets)), targets].mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (one scalar; the top-1 label never changes).

    The NLL is convex in 1/T, so a golden-section search over log T (T in [0.05, 20]) finds its minimum."""
    if len(targets) == 0:
        return 1.0
    low, high = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, targets, math.exp(a)), nll(logits, targets, math.exp(b))
    for _ in range(80):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, targets, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, targets, math.exp(b))
    return math.exp((low + high) / 2)


def reliability(probabilities: np.ndarray, targets: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per confidence bin (equal width over [0, 1]): its count, mean confidence of the top-1 and its accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over ``bins`` equal-width bins."""
    total = len(targets)
    if total == 0:
        return 0.0
    return float(
        sum(
            r["count"] / total * abs(r["confidence"] - r["accuracy"])
            for r in reliability(probabilities, targets, bins)
            if r["count"]
        )
    )


def operating_point(positive_probability: np.ndarray, is_positive: np.ndarray, target_sensitivity: float) -> dict:
    """The highest threshold on the positive class's probability whose sensitivity reaches ``target_sensitivity``
    (``positive`` when probability >= threshold), with the sensitivity and specificity it gives on these images."""
    is_positive = is_positive.astype(bool)
    positives = np.sort(positive_probability[is_positive])[::-1]
    if len(positives) == 0:
        raise ValueError("the split has no positive image, so no threshold can reach a sensitivity")
    needed = max(math.ceil(target_sensitivity * len(positives) - 1e-9), 1)
    threshold = float(positives[needed - 1])
    predicted = positive_probability >= threshold
    negatives = ~is_positive
    return {
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "sensitivity": float(predicted[is_positive].mean()),
        "specificity": float((~predicted[negatives]).mean()) if negatives.any() else None,
    }


@dataclass(frozen=True)
class Calibration:
    """What a run's calibration found: the temperature, the report split's NLL and ECE before and after it, the
    reliability bins of both, and (two classes) the operating point."""

    temperature: float
    split: str
    before: dict
    after: dict
    operating_point: dict | None = None

    def metrics(self) -> dict[str, float]:
        """For metrics.json and the metric line (the test split's names; a run without one reports on valid)."""
        return {
            "temperature": self.temperature,
            **{
                f"{self.split}_{k}_{when}": d[k]
                for when, d in (("before", self.before), ("after", self.after))
                for k in ("nll", "ece")
            },
        }

    def to_json(self) -> dict:
        """model.json's ``calibration`` entry, which serving applies."""
        return {
            "method": "temperature scaling",
            "temperature": self.temperature,
            "fitted_on": "valid",
            "evaluated_on": self.split,
            "bins": BINS,
            "nll_before": self.before["nll"],
            "nll_after": self.after["nll"],
            "ece_before": self.before["ece"],
            "ece_after": self.after["ece"],
            **({"operating_point": self.operating_point} if self.operating_point else {}),
        }


def summary(logits: np.ndarray, targets: np.ndarray, temperature: float) -> dict:
    probabilities = scaled_softmax(logits, temperature)
    return {
        "nll": nll(logits, targets, temperature),
        "ece": expected_calibration_error(probabilities, targets),
        "bins": reliability(probabilities, targets),
    }


def calibrate(
    valid: tuple[np.ndarray, np.ndarray],
    report: tuple[np.ndarray, np.ndarray],
    split: str,
    target_sensitivity: float | None,
) -> Calibration:
    """Fit the temperature on ``valid`` (logits, targets) and measure it on ``report``; with ``target_sensitivity``
    (two classes), also the threshold on the calibrated probability of class 1 that reaches it on ``valid``."""
    temperature = fit_temperature(*valid)
    point = None
    if target_sensitivity is not None:
        logits, targets = valid
        point = operating_point(scaled_softmax(logits, temperature)[:, 1], targets == 1, target_sensitivity)
    return Calibration(temperature, split, summary(*report, 1.0), summary(*report, temperature), point)
