"""Where SageMaker puts things: every SM_* variable, /opt/ml path and sagemaker-training's view of the job
(``toolkit_environment``) is read here, and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path


def base_dir() -> Path:
    """The /opt/ml root (sagemaker-training honours SAGEMAKER_BASE_DIR too)."""
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


def model_dir() -> Path:
    return Path(os.environ.get("SM_MODEL_DIR", base_dir() / "model"))


def output_data_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DATA_DIR", base_dir() / "output" / "data"))


def tensorboard_dir() -> Path:
    return base_dir() / "output" / "tensorboard"


def failure_file() -> Path:
    return base_dir() / "output" / "failure"


def checkpoint_dir() -> Path:
    """Local checkpoint folder; SageMaker syncs it with CheckpointConfig.S3Uri (managed spot)."""
    return base_dir() / "checkpoints"


def decoded_cache_dir() -> Path:
    """Default home of the decoded-image cache: on the job's ML storage volume, beside the checkpoints."""
    return base_dir() / "decoded-cache"


def channel_dir(name: str) -> Path:
    """An input channel's folder, e.g. ``train`` -> /opt/ml/input/data/train."""
    return Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", base_dir() / "input" / "data" / name))


def rule_tensors_dir() -> Path:
    """Where the hook saves the tensors the in-job rules read: on the job's volume, outside /opt/ml/output (which
    SageMaker uploads), and removed once the rules have judged them."""
    return base_dir() / "rule-tensors"


def debug_hook_config() -> Path:
    """The file SageMaker writes when the job has a DebuggerHookConfig."""
    return base_dir() / "input" / "config" / "debughookconfig.json"


def toolkit_environment():
    """sagemaker-training's ``Environment``: the job's hyperparameters, hosts and GPUs, from /opt/ml/input/config."""
    from sagemaker_training import environment

    return environment.Environment()
