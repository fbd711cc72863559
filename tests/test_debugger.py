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
    args = ["--model", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "32", "--workers", "0", "--epochs", "2",
            "--train", str(fashion / "train"), "--valid", str(fashion / "valid"), "--debugger-out", str(out), "--debugger-interval", "5"]  # fmt: skip
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
    args = ["--model", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "32", "--workers", "0", "--epochs", "1",
            "--train", str(fashion / "train"), "--valid", str(fashion / "valid")]  # fmt: skip
    result = run_trainer(args, base)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = read_trial(out)
    assert trial.tensor_names(collection="losses") and trial.tensor_names(collection="biases")
    assert not trial.tensor_names(collection="gradients")
