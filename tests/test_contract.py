"""byoc_contract: the rule names, the verdict line and its regexes, as the trainer prints them and the launcher reads
them."""

import argparse
import re

import pytest

from byoc_contract import rules
from byoc_contract.metric_log import METRIC_NAMES, metric_definitions


def test_verdict_lines_round_trip_and_fold_newlines():
    line = rules.format_line("Overfit", "IssuesFound", 1200, "validation 0.9 vs training 0.2:\nratio 3.5 > 0.1")
    assert "\n" not in line
    assert rules.parse_line(line) == {
        "rule": "Overfit",
        "status": "IssuesFound",
        "step": 1200,
        "evidence": "validation 0.9 vs training 0.2: ratio 3.5 > 0.1",
    }
    assert (
        rules.parse_line(rules.format_line("Overfit", "NoIssuesFound", None, "checked 3 saved steps"))["step"] is None
    )
    for other in (
        "epoch=1 train_loss=0.5",
        "rule=Overfit status=IssuesFound",
        "",
        "prefix rule=Overfit status=IssuesFound step=1 evidence=x",
    ):
        assert rules.parse_line(other) is None
    with pytest.raises(ValueError):
        rules.format_line("DeadRelu", "IssuesFound", 1, "")


def test_rule_metric_regexes_read_only_issues_and_do_not_clash_with_epoch_metrics():
    definitions = rules.metric_definitions()
    assert len({d["Name"] for d in definitions} | set(METRIC_NAMES)) == len(definitions) + len(METRIC_NAMES)
    assert len(definitions) + len(metric_definitions()) <= 40  # SageMaker's limit of metric definitions per job
    line = rules.format_line("VanishingGradient", "IssuesFound", 120, "mean |g| = 0 < 1e-07")
    matched = [d["Name"] for d in definitions if re.search(d["Regex"], line)]
    assert matched == ["rule_VanishingGradient"] and re.search(definitions[1]["Regex"], line).group(1) == "120"


@pytest.mark.parametrize(
    "text,names",
    [
        ("all", list(rules.RULE_NAMES)),
        ("none", []),
        ("", []),
        ("vanishing_gradient, overfit", ["VanishingGradient", "Overfit"]),
        ("LOSS-NOT-DECREASING LossNotDecreasing", ["LossNotDecreasing"]),
    ],
)
def test_rule_names_any_case_and_separator(text, names):
    assert rules.rule_names(text) == names


def test_unknown_rule_and_a_stop_rule_that_is_not_judged_fail_before_training():
    from train.errors import TrainingError
    from train.run import rule_settings

    with pytest.raises(ValueError, match="unknown rule 'dead_relu'"):
        rules.rule_names("overfit,dead_relu")
    with pytest.raises(TrainingError, match="Bad --debugger-rules or --stop-on-rule: unknown rule 'x'"):
        rule_settings(argparse.Namespace(debugger_rules="x", stop_on_rule=[]))
    with pytest.raises(TrainingError, match="--stop-on-rule Overfit: not among the evaluated rules \\(none\\)"):
        rule_settings(argparse.Namespace(debugger_rules="none", stop_on_rule=["Overfit"]))
    assert rule_settings(argparse.Namespace(debugger_rules="all", stop_on_rule=["overfit", "VanishingGradient"])) == (
        list(rules.RULE_NAMES),
        ["Overfit", "VanishingGradient"],
    )


def test_the_trainer_refuses_a_bad_rule_hyperparameter_with_a_failure_reason(tmp_path):
    from conftest import run_trainer

    result = run_trainer(
        ["--train", str(tmp_path / "absent"), "--debugger-rules", "Overfit", "--stop-on-rule", "VanishingGradient"],
        tmp_path / "ml",
    )
    assert result.returncode == 1
    reason = (tmp_path / "ml" / "output" / "failure").read_text()
    assert reason.startswith(
        "--stop-on-rule VanishingGradient: not among the evaluated rules (Overfit); add it to --debugger-rules."
    )


def test_poor_weight_initialization_is_not_judged_by_default_for_pretrained_networks():
    from train.run import rule_settings

    default = argparse.Namespace(debugger_rules=",".join(rules.DEFAULT_RULES), stop_on_rule=[])
    assert "PoorWeightInitialization" in rule_settings(default, pretrained=False)[0]
    assert "PoorWeightInitialization" not in rule_settings(default, pretrained=True)[0]
    asked = argparse.Namespace(debugger_rules="PoorWeightInitialization,Overfit", stop_on_rule=[])
    assert rule_settings(asked, pretrained=True)[0] == ["PoorWeightInitialization", "Overfit"]  # named: judged anyway
