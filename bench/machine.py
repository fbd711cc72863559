"""What a benchmark ran on, written beside its numbers."""
from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata


def describe() -> dict:
    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for package in ("torch", "torchvision", "timm", "onnxruntime", "openvino"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": _gpu(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")),
        "python": platform.python_version(),
        "versions": versions,
    }


def _gpu() -> str:
    """The CUDA devices torch sees, or ``none``."""
    import torch

    if not torch.cuda.is_available():
        return "none"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
