"""Where SageMaker puts things: every SM_* variable and /opt/ml path is read here, and nowhere else."""
from __future__ import annotations

import json
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


def debug_hook_config() -> Path:
    """The file SageMaker writes when the job has a DebuggerHookConfig."""
    return base_dir() / "input" / "config" / "debughookconfig.json"


def resource_config() -> dict:
    """Hosts of the job (``{"current_host": "algo-1", "hosts": [...]}``); one local host when absent."""
    path = base_dir() / "input" / "config" / "resourceconfig.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"current_host": "algo-1", "hosts": ["algo-1"]}


def num_gpus() -> int | None:
    """SM_NUM_GPUS when SageMaker sets it, else None (the caller asks torch)."""
    value = os.environ.get("SM_NUM_GPUS")
    return int(value) if value else None
