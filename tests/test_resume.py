"""Spot interruptions: SIGKILL and SIGTERM mid-epoch lose no epoch and repeat none."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

EPOCHS = 4
ARGS = [
    "--model",
    "resnet18",
    "--pretrained",
    "none",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--epochs",
    str(EPOCHS),
]


def start(fashion, base):
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    args = [*ARGS, "--train", str(fashion / "train"), "--valid", str(fashion / "valid")]
    return subprocess.Popen(
        [sys.executable, "-m", "train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_mid_epoch(process, sig) -> list[str]:
    """Wait for the first epoch line, then signal the process about 40% into the next epoch."""
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith("epoch=1 "):
            seconds = float(re.search(r"epoch_seconds=([0-9.]+)", line).group(1))
            time.sleep(seconds * 0.4)
            process.send_signal(sig)
            break
    out, err = process.communicate(timeout=300)
    return lines + out.splitlines(), err


def epochs_printed(lines: list[str]) -> list[int]:
    return [int(line.split()[0].split("=")[1]) for line in lines if line.startswith("epoch=")]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_training_resumes_without_losing_or_repeating_epochs(tmp_path, fashion, sig):
    first = start(fashion, tmp_path)
    before, err = interrupt_mid_epoch(first, sig)
    assert first.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143), err[-2000:]
    assert epochs_printed(before) == [1]
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    if sig == signal.SIGTERM:
        assert saved[-1].startswith("checkpoint-e0001-s") and saved[-1] != "checkpoint-e0001-s0000000.pt", saved
        steps = int(saved[-1][len("checkpoint-e0001-s") : -3])
        assert 0 < steps < 50
        failure = (tmp_path / "output" / "failure").read_text()
        assert f"Stopped by SIGTERM during epoch 2 after {steps} steps" in failure
    else:
        assert saved == ["checkpoint-e0001-s0000000.pt"]
        steps = 0
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))

    second = start(fashion, tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-2000:]
    assert f"resuming from checkpoint-e0001-s{steps:07d}.pt (epoch 2, step {steps})" in err
    assert epochs_printed(before) + epochs_printed(out.splitlines()) == list(range(1, EPOCHS + 1))
    history = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert (tmp_path / "model" / "model.onnx").is_file()
