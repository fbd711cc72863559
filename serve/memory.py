"""Memory: how much this container has left, and roughly how much loading one more model takes (a multi-model
endpoint answers 507 before a load that would not fit, AWS's container contract, rather than let the kernel's
out-of-memory killer pick a process); and giving freed memory back after a burst of large requests."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
WORKER_BASE_BYTES = (
    160 << 20
)  # a model worker before its model: Python, multi-model-server's worker, OpenVINO (measured: 120-150 MB)
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
    return next(
        (int(value) for name, _, value in (line.partition(" ") for line in lines) if name == key and value.isdigit()), 0
    )


def host_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def limit_and_used(cgroup: Path = CGROUP) -> tuple[int | None, int]:
    """(the container's memory limit or None, what it uses less its reclaimable file cache), cgroup v2 or v1."""
    limit = _read_int(cgroup / "memory.max")  # cgroup v2 ("max" when unlimited: None)
    if (cgroup / "memory.current").is_file():
        return limit, (_read_int(cgroup / "memory.current") or 0) - _stat(cgroup / "memory.stat", "inactive_file")
    v1 = cgroup / "memory"
    limit = _read_int(v1 / "memory.limit_in_bytes")
    return (limit if limit is not None and limit < 1 << 60 else None), (
        _read_int(v1 / "memory.usage_in_bytes") or 0
    ) - _stat(v1 / "memory.stat", "total_inactive_file")


def used_bytes(cgroup: Path = CGROUP) -> int:
    return max(limit_and_used(cgroup)[1], 0)


def available_bytes(cgroup: Path = CGROUP) -> int:
    """What can still be allocated: the container's limit less what it uses, never more than the host has."""
    limit, used = limit_and_used(cgroup)
    own = limit - max(used, 0) if limit is not None else 1 << 62
    return max(0, min(own, host_available()))


def oom_kills(cgroup: Path = CGROUP) -> int:
    """How many processes the kernel killed in this container for lack of memory so far (cgroup v2 or v1)."""
    return _stat(cgroup / "memory.events", "oom_kill") or _stat(cgroup / "memory" / "memory.oom_control", "oom_kill")


def load_need_bytes(model_file: Path, workers: int) -> int:
    """A rough upper bound of what loading ``model_file`` in ``workers`` worker processes takes."""
    return workers * (WORKER_BASE_BYTES + int(MODEL_FACTOR * model_file.stat().st_size))


class Trimmer:
    """Gives the heap memory that large requests freed back to the system, once the server is idle again: glibc
    keeps freed memory in its arenas, so after a burst of multi-megabyte photos a server would stay at its peak,
    and a multi-model endpoint needs that room for models. ``malloc_trim`` runs in a thread, off the event loop,
    and only after at least ``threshold`` bytes of bodies went through since the last time."""

    def __init__(self, enabled: bool, threshold: int = 32 << 20):
        self.threshold, self.pending = threshold, 0
        self.libc = _libc() if enabled else None

    def after_request(self, body_bytes: int, idle: bool) -> None:
        self.pending += body_bytes
        if self.libc is not None and idle and self.pending >= self.threshold:
            self.pending = 0
            threading.Thread(target=self.libc.malloc_trim, args=(0,), name="malloc-trim", daemon=True).start()


def _libc():
    """glibc, for malloc_trim; None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None
