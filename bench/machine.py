"""What a benchmark ran on, written beside its numbers."""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
from importlib import metadata

from byoc_machine import cpu_flags, cpu_model, usable_cores


def describe() -> dict:
    versions = {}
    for package in ("torch", "torchvision", "timm", "onnxruntime", "openvino"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": _gpu(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "isa": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")),
        "python": platform.python_version(),
        "versions": versions,
    }


def _gpu() -> str:
    """The CUDA devices torch sees, or ``none``."""
    import torch

    if not torch.cuda.is_available():
        return "none"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
