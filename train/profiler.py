"""What training spends its time and the machine on, written while it runs into ``<output>/profiler/``.

- ``system.jsonl``: every ``interval`` seconds, CPU use (total and per core), I/O wait, memory, and per GPU
  its utilisation and memory (NVML, when there is a GPU);
- ``steps.jsonl``: per training step, the time spent waiting for the data loader, in the forward pass,
  the backward pass and the optimizer step (CUDA events on a GPU, so timing does not stall it);
- ``run.json``: what the rules need to know about the run (device, data loader workers, cores, batch size).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

log = logging.getLogger(__name__)


def _gpu_handles() -> list:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVIDIA driver or library: a CPU machine
        return []


def _gpu_sample(handle) -> dict:
    import pynvml

    util = pynvml.nvmlDeviceGetUtilizationRates(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {"util": float(util.gpu), "memory": 100.0 * memory.used / max(memory.total, 1)}


class SystemSampler:
    """A background thread appending one JSON line of system metrics every ``interval`` seconds."""

    def __init__(self, path: Path, interval: float):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self.gpus = _gpu_handles()

    def __enter__(self) -> SystemSampler:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        psutil.cpu_percent(percpu=True)
        psutil.cpu_times_percent()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.path.open("a") as out:
            while not self._stop.wait(self.interval):
                cores = psutil.cpu_percent(percpu=True)
                times = psutil.cpu_times_percent()
                row = {
                    "time": time.time(),
                    "cpu": sum(cores) / len(cores),
                    "cores": cores,
                    "iowait": getattr(times, "iowait", 0.0),
                    "memory": psutil.virtual_memory().percent,
                    "gpus": [_gpu_sample(h) for h in self.gpus],
                }
                out.write(json.dumps(row) + "\n")
                out.flush()


class StepTimer:
    """Times the phases of each training step; rows are written to ``path`` at each ``flush()``."""

    PHASES = ("forward", "backward", "optimizer")

    def __init__(self, path: Path | None, device: torch.device):
        self.path, self.cuda = path, device.type == "cuda"
        self.rows: list[dict] = []
        self._current: dict = {}

    def timed(self, batches: Iterable) -> Iterator:
        """Yield from ``batches``, recording how long each one was waited for."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self._current = {"time": time.time(), "data": time.perf_counter() - started}
            yield item

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._current[name] = (start, end)
        else:
            started = time.perf_counter()
            yield
            self._current[name] = time.perf_counter() - started

    def end_step(self, epoch: int, step: int, batch: int) -> None:
        self.rows.append({**self._current, "epoch": epoch, "step": step, "batch": batch})
        self._current = {}

    def flush(self) -> None:
        """Resolve GPU timings (one synchronisation) and append the rows to the file."""
        if self.path is None or not self.rows:
            self.rows = []
            return
        if self.cuda:
            torch.cuda.synchronize()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            for row in self.rows:
                for name in self.PHASES:
                    if isinstance(row.get(name), tuple):
                        start, end = row[name]
                        row[name] = start.elapsed_time(end) / 1000.0
                out.write(json.dumps(row) + "\n")
        self.rows = []


def write_run_info(folder: Path, device: torch.device, workers: int, cores: int, batch_size: int, model: str) -> None:
    """``run.json``: the facts the profiler rules weigh the samples against (``cores``: the rank's share)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"device": str(device), "workers": workers, "cores": cores, "batch_size": batch_size, "model": model}
    (folder / "run.json").write_text(json.dumps(info, indent=2))
