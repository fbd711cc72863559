"""Offline Debugger rules: planted failures on real Fashion-MNIST runs trigger the rules that describe them."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("smdebug", reason="smdebug is part of the train extra")
import debug_scenarios

from train.debug.tensor_check import evaluate, open_trial
from train.debug.tensor_rules import RULES

# scenario -> the rules that must find issues (every other rule must not). Besides the planted failure:
# a model that learns nothing mispredicts whole classes (ClassImbalance's misprediction check); a flat
# sigmoid stack is also a poor initialisation; an overfitting run's validation loss rises (LossNotDecreasing)
# and stops improving (Overtraining).
EXPECTED = {
    "healthy": set(),
    "vanishing gradient": {"VanishingGradient", "PoorWeightInitialization", "LossNotDecreasing", "ClassImbalance"},
    "loss stops decreasing": {"LossNotDecreasing", "ClassImbalance"},
    "overfitting": {"Overfit", "Overtraining", "LossNotDecreasing", "ClassImbalance"},
    "bad initialisation": {"PoorWeightInitialization"},
    "exploding": {"ExplodingTensor", "ClassImbalance"},
    "class imbalance": {"ClassImbalance"},
}


TRAIN_ALL = """
import sys
from pathlib import Path
sys.path.insert(0, "tests")
import debug_scenarios
for name, make in debug_scenarios.SCENARIOS.items():
    make(Path(sys.argv[1]) / name.replace(" ", "_"))
"""


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
    """Every scenario trained once (in a child process, as training runs), its tensors saved by the trainer's hook."""
    root = tmp_path_factory.mktemp("scenarios")
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_ALL, str(root)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: root / name.replace(" ", "_") for name in debug_scenarios.SCENARIOS}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_planted_failure_triggers_exactly_its_rules(tensors, scenario):
    verdicts = evaluate(open_trial(tensors[scenario]), list(RULES), {})
    found = {v.rule for v in verdicts if v.status == "IssuesFound"}
    assert found == EXPECTED[scenario], "\n".join(f"{v.rule}: {v.status} {v.evidence}" for v in verdicts)
    assert all(v.status in ("IssuesFound", "NoIssuesFound") for v in verdicts)
    for v in verdicts:
        if v.status == "IssuesFound":
            assert v.step is not None and v.evidence


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "train.debug", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_prints_the_table_and_exits_for_ci(tensors, tmp_path):
    healthy = run_cli("rules", tensors["healthy"])
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.count("NoIssuesFound") == len(RULES)
    out = tmp_path / "verdicts.json"
    overfit = run_cli("rules", tensors["overfitting"], "--rules", "overfit,vanishing-gradient", "--json", out)
    assert overfit.returncode == 1
    lines = overfit.stdout.splitlines()
    assert lines[0].split() == ["rule", "status", "step", "evidence"]
    assert lines[1].split()[:2] == ["Overfit", "IssuesFound"] and "ratio" in lines[1]
    assert lines[2].split()[:2] == ["VanishingGradient", "NoIssuesFound"]
    assert [v["status"] for v in json.loads(out.read_text())] == ["IssuesFound", "NoIssuesFound"]


def test_parameters_override_aws_defaults(tensors):
    trial = open_trial(tensors["overfitting"])
    [strict] = evaluate(trial, ["Overfit"], {})
    [lenient] = evaluate(trial, ["Overfit"], {"Overfit": {"patience": "31"}})
    assert strict.status == "IssuesFound" and lenient.status == "NoIssuesFound"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rules", "NoSuchRule"], "unknown rule 'NoSuchRule'"),
        (["--param", "Overfit.bogus=1"], "Overfit has no parameter bogus"),
        (["--param", "Overfit.patience=soon"], "Overfit.patience='soon'"),
        (["--param", "ratio_threshold=1"], "write it as Rule.parameter=value"),
    ],
)
def test_bad_arguments_exit_2_with_the_fix(tensors, args, message):
    result = run_cli("rules", tensors["healthy"], *args)
    assert result.returncode == 2 and message in result.stderr


def test_a_folder_without_tensors_is_refused(tmp_path):
    result = run_cli("rules", tmp_path)
    assert result.returncode == 2 and "holds no smdebug tensors" in result.stderr and "--debugger-out" in result.stderr


def test_rule_without_its_tensors_is_an_error(tensors):
    [verdict] = evaluate(
        open_trial(tensors["healthy"]), ["ClassImbalance"], {"ClassImbalance": {"labels_regex": "^nothing$"}}
    )
    assert verdict.status == "Error" and "were not saved" in verdict.evidence


def test_a_validation_pass_weighs_each_batch_by_its_images():
    """The rules' validation loss is the one the trainer prints: a short last batch counts for the images it holds."""
    from train.debug.curves import Point, passes

    batches = [Point(10, 1.0), Point(11, 1.0), Point(12, 0.1), Point(40, 0.5)]  # two passes: steps 10-12 and 40
    first, second = passes(batches, {10: 32, 11: 32, 12: 12})
    assert first.value == pytest.approx((32 + 32 + 0.1 * 12) / 76) and (first.first_step, first.step) == (10, 12)
    assert second.value == 0.5
    assert passes(batches)[0].value == pytest.approx(0.7)  # without sizes: the plain mean of the batches
