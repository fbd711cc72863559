"""Metric values against hand computations, and the metric line format."""

import math
import re

import numpy as np
import pytest

from byoc_contract.metric_log import METRIC_NAMES, format_line, metric_definitions
from train.metrics import classification_metrics, confusion_matrix, roc_auc


def one_hot_scores(predicted, num_classes):
    scores = np.full((len(predicted), num_classes), 0.01)
    scores[np.arange(len(predicted)), predicted] = 0.9
    return scores


def test_accuracy_balanced_accuracy_and_macro_f1():
    target = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 1])
    m = classification_metrics(one_hot_scores(predicted, 3), target)
    assert m["acc"] == pytest.approx(0.7)
    assert m["balanced_acc"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    f1 = [2 * (3 / 4) * (3 / 4) / (3 / 2), 2 * (1 / 3) * (1 / 2) / (5 / 6), 2 * 1 * (3 / 4) / (7 / 4)]
    assert m["f1"] == pytest.approx(np.mean(f1))
    assert "top5" not in m and "auc" not in m


def test_top5_counts_a_hit_anywhere_in_the_five_best():
    scores = np.tile(np.arange(10, dtype=float), (2, 1))  # class 9 best, then 8, ...
    m = classification_metrics(scores, np.array([5, 4]))
    assert m["top5"] == pytest.approx(0.5)


def test_roc_auc_matches_the_pair_count_with_ties():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    positive = np.array([0, 0, 1, 1, 1], dtype=bool)
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, positive) == pytest.approx(expected)
    assert math.isnan(roc_auc(scores, np.ones(5, bool)))


def test_binary_metrics_include_auc():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics(probabilities, np.array([0, 1, 1, 0]))
    assert m["auc"] == pytest.approx(0.75)  # positives 0.8, 0.4 vs negatives 0.1, 0.7: 3 of 4 pairs ordered


def test_confusion_matrix_rows_are_truth():
    matrix = confusion_matrix(np.array([1, 1, 0]), np.array([0, 1, 0]), 2)
    assert matrix.tolist() == [[1, 1], [0, 1]]


def test_metric_line_is_parsed_back_by_every_definition():
    values = {name: 0.5 + i / 1000 for i, name in enumerate(METRIC_NAMES)}
    values["lr"] = 3.2e-05
    values["skipped_images"] = 7
    line = format_line(values, epoch=3)
    assert line.startswith("epoch=3 train_loss=0.5000 ")
    for definition in metric_definitions():
        match = re.search(definition["Regex"], "2026-01-01 INFO " + line)
        assert match, definition
        assert float(match.group(1)) == pytest.approx(values[definition["Name"]], rel=1e-3)


def test_unknown_metric_names_are_refused():
    with pytest.raises(ValueError, match="valid_accuracy"):
        format_line({"valid_accuracy": 1.0})


def test_nan_is_printed_but_not_matched():
    line = format_line({"valid_auc": float("nan"), "valid_acc": 0.25})
    assert "valid_auc=nan" in line
    regex = {d["Name"]: d["Regex"] for d in metric_definitions()}
    assert re.search(regex["valid_auc"], line) is None
    assert re.search(regex["valid_acc"], line).group(1) == "0.2500"
