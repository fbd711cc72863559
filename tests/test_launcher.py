"""The training job's entry: torchrun placement and the accelerator check."""

import pytest
import torch

from train.accelerators import describe_accelerators
from train.errors import TrainingError
from train.torchrun import torchrun_command


def test_torchrun_command_for_one_and_several_hosts():
    one = torchrun_command(["--epochs", "1"], ["algo-1"], "algo-1", 8)
    assert one[3:] == ["--standalone", "--nproc-per-node=8", "-m", "train", "--epochs", "1"]
    two = torchrun_command([], ["algo-1", "algo-2"], "algo-2", 4)
    assert two[3:] == [
        "--nnodes=2",
        "--node-rank=1",
        "--master-addr=algo-1",
        "--master-port=29500",
        "--nproc-per-node=4",
        "-m",
        "train",
    ]


def test_cpu_host_is_described(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert describe_accelerators().endswith("no GPU: training on the CPU")


def test_gpus_that_torch_cannot_use_fail_with_the_fix(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '470.182.03, Tesla T4'\n")
    smi.chmod(0o755)
    monkeypatch.setattr("shutil.which", lambda name: str(smi) if name == "nvidia-smi" else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match=r"driver, GPU: 470.182.03, Tesla T4.*TORCH_INDEX_URL=.*cu126"):
        describe_accelerators()
