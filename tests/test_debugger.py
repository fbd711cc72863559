"""SageMaker Debugger: the smdebug hook saves tensors that smdebug's own trial reader reads back."""

import json

import numpy as np
import pytest
from conftest import run_trainer

smdebug = pytest.importorskip("smdebug", reason="smdebug is part of the train extra")


def read_trial(path):
    from smdebug.trials import create_trial

    return create_trial(str(path))


def test_debugger_out_saves_losses_weights_and_gradients(tmp_path, fashion):
    out = tmp_path / "tensors"
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--epochs",
        "2",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
        "--debugger-out",
        str(out),
        "--debugger-interval",
        "5",
    ]
    result = run_trainer(args, tmp_path / "ml")
    assert result.returncode == 0, result.stderr[-3000:]
    from smdebug import modes

    trial = read_trial(out)
    losses = trial.tensor_names(collection="losses")
    assert losses
    train_steps = trial.tensor(losses[0]).steps(mode=modes.TRAIN)
    assert train_steps == list(range(0, 26, 5))  # 13 steps an epoch x 2 epochs, every 5th
    assert trial.tensor(losses[0]).steps(mode=modes.EVAL)
    values = [float(trial.tensor(losses[0]).value(s, mode=modes.TRAIN)) for s in train_steps]
    assert all(np.isfinite(values)) and values[-1] < values[0] + 1.0
    weights = [n for n in trial.tensor_names(collection="weights") if "conv1" in n]
    assert weights and trial.tensor(weights[0]).value(0, mode=modes.TRAIN).shape == (64, 3, 7, 7)
    assert trial.tensor_names(collection="gradients")


def test_sagemaker_hook_config_is_honoured(tmp_path, fashion):
    base = tmp_path / "ml"
    (base / "input" / "config").mkdir(parents=True)
    out = tmp_path / "sm-tensors"
    config = {
        "LocalPath": str(out),
        "HookParameters": {"save_interval": "4"},
        "CollectionConfigurations": [{"CollectionName": "losses"}, {"CollectionName": "biases"}],
    }
    (base / "input" / "config" / "debughookconfig.json").write_text(json.dumps(config))
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
    ]
    result = run_trainer(args, base)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = read_trial(out)
    assert trial.tensor_names(collection="losses") and trial.tensor_names(collection="biases")
    assert not trial.tensor_names(collection="gradients")


LEAN_HOOK = """
import sys, torch
from torch import nn
from train.debugger import create_hook, set_mode


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        self.dead = nn.Linear(8, 4)

    def forward(self, x):
        return self.body(x) + 0.0 * self.dead(x)  # the dead layer's gradients are exactly zero at every step


torch.manual_seed(0)
model, loss_fn = Net(), nn.CrossEntropyLoss()
hook = create_hook(sys.argv[1], 10, "gradients,losses", model, loss_fn, lean=True)
set_mode(hook, "TRAIN")
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(25):
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
hook.close()
"""


def test_lean_hook_keeps_gradient_reductions_after_the_early_steps_and_vanishing_gradient_reads_them(tmp_path):
    """The in-job rules' hook: whole gradients over the first steps, only |mean| and |max| after them (what
    VanishingGradient reads); the rule fires on a step where only the reductions were saved."""
    import subprocess
    import sys

    from conftest import REPO

    from train.debug.tensor_check import first_issue, open_trial
    from train.debug.tensor_rules import VanishingGradient

    out = tmp_path / "tensors"
    run = subprocess.run(
        [sys.executable, "-c", LEAN_HOOK, str(out)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    trial = open_trial(out)
    dead = next(n for n in trial.tensor_names(collection="gradients") if "dead" in n and n.endswith("weight"))
    tensor = trial.tensor(dead)
    assert tensor.steps() == [0, 10, 20]
    assert tensor.value(0).shape == (4, 8)  # whole over the early steps
    with pytest.raises(smdebug.exceptions.TensorUnavailableForStep):
        tensor.value(10)  # afterwards only reductions
    assert tensor.reduction_value(20, "mean", abs=True) == 0.0 and tensor.reduction_value(20, "max", abs=True) == 0.0
    live = next(n for n in trial.tensor_names(collection="gradients") if "body.0" in n and n.endswith("weight"))
    assert trial.tensor(live).reduction_value(20, "mean", abs=True) > 1e-7
    rule = VanishingGradient(trial)
    assert first_issue(rule, [10, 20]) == 10 and "Net_dead." in rule.evidence


def test_an_unreadable_tensor_file_makes_an_error_verdict_not_a_failed_job(tmp_path, capsys):
    """In-job rules on a folder whose tensor files were damaged: the rules that read them say Error, nothing raises."""
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    from train.debug.in_job import InJobRules

    out = tmp_path / "tensors"
    run = subprocess.run(
        [sys.executable, "-c", LEAN_HOOK, str(out)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for events in (out / "events").rglob("*.tfevents"):
        events.write_bytes(events.read_bytes()[:40])  # truncated mid-record, as by a full disk
    rules = InJobRules(["VanishingGradient", "LossNotDecreasing"], out, [])
    assert rules.evaluate(final=True) is None
    statuses = {r: v.status for r, v in rules.verdicts.items()}
    assert "Error" in statuses.values(), statuses
    assert "status=Error" in capsys.readouterr().out
    shutil.rmtree(out)
