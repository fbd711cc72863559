"""Two processes under torchrun with gloo on the CPU: one set of logs and one artifact, from rank 0."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_two_process_gloo_ddp(tmp_path, fashion):
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-port=29533",
        "-m",
        "train",
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--epochs",
        "2",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
        "--test",
        str(fashion / "test"),
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch=")]
    assert [line.split()[0] for line in epoch_lines] == ["epoch=1", "epoch=2"]  # rank 0 alone prints
    metrics = json.loads((tmp_path / "model" / "model.json").read_text())["metrics"]
    assert 0.0 <= metrics["test_acc"] <= 1.0
    report = json.loads((tmp_path / "output" / "data" / "test_report.json").read_text())
    assert sum(r["support"] for r in report["classes"].values()) == 100  # both ranks' shards gathered
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2
