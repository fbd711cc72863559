"""The job's first log line: torch, CUDA and the NVIDIA driver, and a clear failure when GPUs are there but unusable."""

from __future__ import annotations

import shutil
import subprocess

import torch

from train.errors import TrainingError


def describe_accelerators() -> str:
    """One line on torch, CUDA and the NVIDIA driver; fails clearly when GPUs are there but unusable."""
    line = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})"
    smi = shutil.which("nvidia-smi")
    driver = ""
    if smi:
        result = subprocess.run(
            [smi, "--query-gpu=driver_version,name", "--format=csv,noheader"], capture_output=True, text=True
        )
        driver = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    if driver and not torch.cuda.is_available():
        raise TrainingError(
            f"This host has GPUs (driver, GPU: {driver}) but {line} cannot use them: its CUDA needs a newer driver. "
            "Rebuild the image with a torch build for an older CUDA (--build-arg "
            "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 "
            "runs on drivers >= 525), or use an instance with a newer driver."
        )
    if torch.cuda.is_available():
        return (
            f"{line}, driver {driver or 'unknown'}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
        )
    return f"{line}, no GPU: training on the CPU"
