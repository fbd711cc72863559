"""How much memory this container has left, and roughly how much loading one more model takes: a multi-model
endpoint answers 507 before a load that would not fit (AWS's container contract), rather than let the kernel's
out-of-memory killer pick a process."""
from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
WORKER_BASE_BYTES = 160 << 20  # a model worker before its model: Python, multi-model-server's worker, OpenVINO (measured: 120-150 MB)
MODEL_FACTOR = 2.5  # the model file's bytes, as read and as compiled by the runtime


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    return next((int(value) for name, _, value in (line.partition(" ") for line in lines) if name == key and value.isdigit()), 0)


def host_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def available_bytes(cgroup: Path = CGROUP) -> int:
    """What can still be allocated: the container's limit less what it uses (its reclaimable file cache not
    counted), and never more than the host has available."""
    limit = _read_int(cgroup / "memory.max")  # cgroup v2 ("max" when unlimited: None)
    if limit is not None:
        used = (_read_int(cgroup / "memory.current") or 0) - _stat(cgroup / "memory.stat", "inactive_file")
    else:  # cgroup v1
        limit = _read_int(cgroup / "memory" / "memory.limit_in_bytes")
        used = (_read_int(cgroup / "memory" / "memory.usage_in_bytes") or 0) - _stat(cgroup / "memory" / "memory.stat", "total_inactive_file")
    own = (limit - max(used, 0)) if limit is not None and limit < (1 << 60) else 1 << 62
    return max(0, min(own, host_available()))


def oom_kills(cgroup: Path = CGROUP) -> int:
    """How many processes the kernel killed in this container for lack of memory so far (cgroup v2; 0 elsewhere)."""
    return _stat(cgroup / "memory.events", "oom_kill")


def load_need_bytes(model_file: Path, workers: int) -> int:
    """A rough upper bound of what loading ``model_file`` in ``workers`` worker processes takes."""
    return workers * (WORKER_BASE_BYTES + int(MODEL_FACTOR * model_file.stat().st_size))
