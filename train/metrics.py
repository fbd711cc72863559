"""Classification metrics from scores and targets (numpy only, so serving-side tools can reuse the definitions)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (target, predicted), 1)
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties count half); NaN with one class only."""
    positive = positive.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(probabilities: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """acc, top5, balanced_acc, f1 (macro over classes present), and auc for two classes."""
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, target, num_classes)
    stats = per_class(matrix)
    present = stats["support"] > 0
    result = {
        "acc": float((predicted == target).mean()) if len(target) else float("nan"),
        "balanced_acc": float(stats["recall"][present].mean()) if present.any() else float("nan"),
        "f1": float(stats["f1"][present].mean()) if present.any() else float("nan"),
    }
    if num_classes >= 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        result["top5"] = float((top5 == target[:, None]).any(axis=1).mean())
    if num_classes == 2:
        result["auc"] = roc_auc(probabilities[:, 1], target == 1)
    return result
