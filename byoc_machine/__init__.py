"""The machine this process runs on, read once for the server, the trainer, the tuner and the benchmarks.

- ``usable_cores()``: the cores the process may really use. ``os.cpu_count()`` counts the host's, so a container under
  a CPU limit (``docker run --cpus 2``, a Kubernetes/KServe ``limits.cpu``) would start one thread per host core. This
  is the smallest of the CPU affinity and the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up.
- ``cores_explained()``: the same, with its reasons, for start-up lines.
- ``cpu_flags()``: the CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, arm64 ``Features``).
- ``cpu_model()``: the CPU's name, for benchmark reports.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

CGROUP_MOUNT = Path("/sys/fs/cgroup")


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """The process's v2 cgroup path and its v1 ``cpu`` controller path, from ``/proc/self/cgroup``."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each folder above it up to ``mount`` (a limit anywhere above binds the process too)."""
    folders, current = [], mount / path.lstrip("/")
    while True:
        folders.append(current)
        if current == mount or mount not in current.parents:
            return folders
        current = current.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(mount: Path = CGROUP_MOUNT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroups, in cores (``1.5`` for ``--cpus 1.5``), or None when unlimited."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits = []
    if v2 is not None:
        for folder in _ancestors(mount, v2):
            fields = (_read(folder / "cpu.max") or "max").split()
            if fields[0] != "max" and len(fields) == 2 and int(fields[1]) > 0:
                limits.append(int(fields[0]) / int(fields[1]))
    if v1 is not None:
        for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            for folder in _ancestors(mount / controller, v1):
                quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                if quota and period and int(quota) > 0 and int(period) > 0:
                    limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def _capped(affinity: int, limit: float | None) -> int:
    return max(min(affinity, math.ceil(limit)) if limit is not None else affinity, 1)


def usable_cores(mount: Path = CGROUP_MOUNT, proc_cgroup: str | None = None) -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup CPU quota (rounded up), at least 1."""
    return _capped(len(os.sched_getaffinity(0)), cgroup_cpu_limit(mount, proc_cgroup))


def cores_explained(mount: Path = CGROUP_MOUNT, proc_cgroup: str | None = None) -> str:
    """Why ``usable_cores`` says what it says, for a start-up line: ``1 usable core (cgroup CPU quota 1, 2 in
    affinity)``."""
    affinity, limit = len(os.sched_getaffinity(0)), cgroup_cpu_limit(mount, proc_cgroup)
    cores = _capped(affinity, limit)
    quota = f"cgroup CPU quota {limit:g}" if limit is not None else "no cgroup CPU quota"
    return f"{cores} usable core{'s' * (cores != 1)} ({quota}, {affinity} in affinity)"


@functools.cache
def _cpuinfo() -> str:
    return _read(Path("/proc/cpuinfo")) or ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (``avx512_bf16``, ``amx_tile``; ``bf16``, ``asimd`` on arm64); empty where unknown."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name (x86 ``model name``), or ``unknown``."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"
