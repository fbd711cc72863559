"""The profiler rules the course uses, evaluated on what ``train.profiler`` recorded.

Parameters and defaults are those of SageMaker's built-in profiler rules. SageMaker's rules watch GPU
utilisation; on a run without a GPU the data-loading rules judge the step timeline instead (how long each
step waited for its batch), and the GPU-only rules say there is nothing to check.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from byoc_contract.rules import ISSUES, NO_ISSUES, PROFILER_RULES
from train.cores import auto_workers
from train.debug.parameters import typed
from train.debug.verdicts import Verdict

COMPUTE = ("forward", "backward", "optimizer")


@dataclass
class Profile:
    samples: list[dict]
    steps: list[dict]
    run: dict

    @property
    def has_gpu(self) -> bool:
        return any(s["gpus"] for s in self.samples)

    def gpu_series(self, key: str, skip: int) -> list[np.ndarray]:
        """Per GPU, ``key`` (util or memory) over the samples after the first ``skip``."""
        rows = [s["gpus"] for s in self.samples[skip:] if s["gpus"]]
        return [np.array([r[i][key] for r in rows]) for i in range(len(rows[0]))] if rows else []

    def step_seconds(self) -> np.ndarray:
        return np.array([s.get("data", 0.0) + sum(s.get(p, 0.0) for p in COMPUTE) for s in self.steps])

    def data_share(self) -> float:
        """Share of the training steps' time spent waiting for the data loader (0..1)."""
        total = self.step_seconds().sum()
        return float(sum(s.get("data", 0.0) for s in self.steps) / total) if total > 0 else 0.0

    @cached_property
    def samples_while_waiting(self) -> list[dict]:
        """The system samples taken while a step waited for its batch (the waits are in time order)."""
        waits = [(s["time"] - s["data"], s["time"]) for s in self.steps if s.get("data", 0) > 0]
        starts = [a for a, _ in waits]
        found = []
        for sample in self.samples:
            i = bisect.bisect_right(starts, sample["time"]) - 1
            if i >= 0 and sample["time"] <= waits[i][1]:
                found.append(sample)
        return found

    def during_waits(self, key: str) -> float | None:
        """Median of a system metric over the samples taken while a step waited for its batch; None when no sample
        fell within a wait (short waits, or none)."""
        values = [x[key] for x in self.samples_while_waiting]
        return float(np.median(values)) if values else None


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def load_profile(folder: Path) -> Profile:
    """The profile written by a run into ``folder`` (``<output>/profiler``)."""
    if not (folder / "run.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no profile: train with --profiler-interval > 0 and point at its --output-data-dir"
        )
    return Profile(
        read_jsonl(folder / "system.jsonl"),
        read_jsonl(folder / "steps.jsonl"),
        json.loads((folder / "run.json").read_text()),
    )


class ProfilerRule:
    SUMMARY = ""

    def __init__(self, **params):
        self.params = typed(type(self).__name__, PROFILER_RULES[type(self).__name__].parameters, params)

    def verdict(self, evidence: str | None, fine: str) -> Verdict:
        """IssuesFound with ``evidence`` when there is any, else NoIssuesFound saying why (``fine``)."""
        name = type(self).__name__
        return Verdict(name, ISSUES, evidence=evidence) if evidence else Verdict(name, NO_ISSUES, evidence=fine)

    def evaluate(self, profile: Profile) -> Verdict:
        raise NotImplementedError


NO_GPU = "no GPU in this run: nothing to check"


def _too_short(count: int, params: dict) -> str:
    return f"{count} GPU samples after patience={params['patience']}: too few to judge (lower patience for short runs)"


class LowGPUUtilization(ProfilerRule):
    SUMMARY = "GPU utilisation low (p95 below threshold_p95) or fluctuating (p5 below threshold_p5)"

    def evaluate(self, profile: Profile) -> Verdict:
        if not profile.has_gpu:
            return self.verdict(None, NO_GPU)
        series = profile.gpu_series("util", self.params["patience"])
        if not series or len(series[0]) < self.params["window"]:
            return self.verdict(None, _too_short(len(series[0]) if series else 0, self.params))
        for gpu, util in enumerate(series):
            for start in range(0, len(util) - self.params["window"] + 1, self.params["window"]):
                p5, p95 = np.percentile(util[start : start + self.params["window"]], [5, 95])
                if p95 < self.params["threshold_p95"]:
                    return self.verdict(
                        f"GPU {gpu} underused: p95 utilisation {p95:.0f}% < {self.params['threshold_p95']:g}%", ""
                    )
                if p5 < self.params["threshold_p5"]:
                    return self.verdict(
                        f"GPU {gpu} fluctuates: p5 utilisation {p5:.0f}% < {self.params['threshold_p5']:g}% while p95 "
                        f"is {p95:.0f}%",
                        "",
                    )
        return self.verdict(None, f"GPU utilisation p95 >= {self.params['threshold_p95']:g}% in every window")


class BatchSize(ProfilerRule):
    SUMMARY = "CPU, GPU and GPU memory all lightly used: a larger batch would fit"

    def evaluate(self, profile: Profile) -> Verdict:
        if not profile.has_gpu:
            return self.verdict(None, NO_GPU)
        util, memory = (
            profile.gpu_series("util", self.params["patience"]),
            profile.gpu_series("memory", self.params["patience"]),
        )
        if not util or len(util[0]) < self.params["window"]:
            return self.verdict(None, _too_short(len(util[0]) if util else 0, self.params))
        cpu = np.percentile([s["cpu"] for s in profile.samples[self.params["patience"] :]], 95)
        gpu, mem = np.percentile(util[0], 95), np.percentile(memory[0], 95)
        if (
            cpu < self.params["cpu_threshold_p95"]
            and gpu < self.params["gpu_threshold_p95"]
            and mem < self.params["gpu_memory_threshold_p95"]
        ):
            return self.verdict(
                f"p95 CPU {cpu:.0f}%, GPU {gpu:.0f}%, GPU memory {mem:.0f}%: raise --batch-size (batch "
                f"{profile.run['batch_size']})",
                "",
            )
        return self.verdict(None, f"p95 CPU {cpu:.0f}%, GPU {gpu:.0f}%, GPU memory {mem:.0f}%")


class _Bottleneck(ProfilerRule):
    """GPU idle while ``metric`` is high (SageMaker's definition); without a GPU, steps that wait for data while it
    is."""

    metric, threshold_name, label = "", "", ""

    def evaluate(self, profile: Profile) -> Verdict:
        limit = self.params[self.threshold_name]
        if profile.has_gpu:
            samples = [s for s in profile.samples[self.params["patience"] :] if s["gpus"]]
            if not samples:
                return self.verdict(None, _too_short(0, self.params))
            hits = [
                s for s in samples if s["gpus"][0]["util"] < self.params["gpu_threshold"] and s[self.metric] > limit
            ]
            share = 100 * len(hits) / len(samples)
            what = (
                f"GPU below {self.params['gpu_threshold']:g}% while {self.label} above {limit:g}% in {share:.0f}% "
                f"of {len(samples)} samples"
            )
        else:
            share = 100 * profile.data_share()
            level = profile.during_waits(self.metric)
            if level is None:
                return self.verdict(
                    None,
                    f"steps waited for data {share:.0f}% of step time, too briefly for a system sample to fall within "
                    f"a wait: no {self.label} to judge",
                )
            if level <= limit:
                return self.verdict(
                    None,
                    f"{self.label} {level:.0f}% while steps waited for data ({share:.0f}% of step time), not above "
                    f"{limit:g}%",
                )
            what = f"steps waited for data {share:.0f}% of the time with {self.label} at {level:.0f}% (> {limit:g}%)"
        return self.verdict(what if share > self.params["threshold"] else None, what)


class CPUBottleneck(_Bottleneck):
    SUMMARY = "the accelerator waits while the CPU is saturated (data preparation is CPU-bound)"
    metric, threshold_name, label = "cpu", "cpu_threshold", "CPU"


class IOBottleneck(_Bottleneck):
    SUMMARY = "the accelerator waits while the CPUs wait on I/O (reading the data is the limit)"
    metric, threshold_name, label = "iowait", "io_threshold", "I/O wait"


class StepOutlier(ProfilerRule):
    SUMMARY = "more than n_outliers steps slower than mean + stddev standard deviations"

    def evaluate(self, profile: Profile) -> Verdict:
        seconds = profile.step_seconds()
        if len(seconds) < 2:
            return self.verdict(None, f"{len(seconds)} steps recorded: too few to judge")
        limit = seconds.mean() + self.params["stddev"] * seconds.std()
        outliers = np.flatnonzero(seconds > limit)
        what = (
            f"{len(outliers)} of {len(seconds)} steps above {limit * 1000:.0f} ms (mean "
            f"{seconds.mean() * 1000:.0f} ms, max {seconds.max() * 1000:.0f} ms)"
        )
        return self.verdict(what if len(outliers) > self.params["n_outliers"] else None, what)


class Dataloader(ProfilerRule):
    """SageMaker's check of the loader processes against the cores, plus (ours) how long steps wait for data. Too few
    workers means fewer than ``--workers auto`` picks for the rank's cores (``train.cores.auto_workers``), so the
    default is never flagged."""

    SUMMARY = (
        "fewer loader workers than --workers auto picks, more than max_threshold % of the cores, or steps "
        "waiting on the loader more than wait_threshold %"
    )

    def evaluate(self, profile: Profile) -> Verdict:
        workers, cores = profile.run["workers"], profile.run["cores"]
        share = 100 * profile.data_share()
        found = []
        if share > self.params["wait_threshold"]:
            cause = self._cause(profile)
            found.append(
                f"data bottleneck: steps waited for data {share:.0f}% of the time (> "
                f"{self.params['wait_threshold']:g}%); {cause}"
            )
        if workers < auto_workers(cores):
            found.append(
                f"{workers} loader workers for {cores} cores: raise --workers to {auto_workers(cores)} (what "
                "--workers auto picks)"
            )
        if 100 * workers / cores > self.params["max_threshold"]:
            found.append(
                f"{workers} loader workers for {cores} cores (> {self.params['max_threshold']:g}%): lower --workers"
            )
        return self.verdict(
            "; ".join(found), f"steps waited for data {share:.0f}% of the time; {workers} workers for {cores} cores"
        )

    @staticmethod
    def _cause(profile: Profile) -> str:
        cpu, io = profile.during_waits("cpu"), profile.during_waits("iowait")
        if cpu is None or io is None:
            return "no system sample fell within a wait, so CPU and I/O load are unknown: the waits are short and many"
        if cpu > 90:
            return (
                f"the CPUs were busy ({cpu:.0f}%): decoding/augmenting is the limit, add workers or cores, or "
                "cache decoded images"
            )
        if io > 50:
            return (
                f"the CPUs waited on I/O ({io:.0f}%): reading the files is the limit, use faster storage or "
                "FastFile/Pipe mode"
            )
        return (
            f"neither CPU ({cpu:.0f}%) nor I/O ({io:.0f}%) was busy: the loader itself is slow (sleeps, network, "
            "locks, too few workers)"
        )


RULES: dict[str, type[ProfilerRule]] = {
    cls.__name__: cls for cls in (LowGPUUtilization, CPUBottleneck, IOBottleneck, BatchSize, StepOutlier, Dataloader)
}


def evaluate(profile: Profile, params: dict[str, dict[str, object]]) -> list[Verdict]:
    """The verdict of every profiler rule, with ``params`` overriding their defaults."""
    unknown = sorted(set(params) - set(RULES))
    if unknown:
        raise ValueError(f"unknown profiler rule(s) {', '.join(unknown)}; choose from {', '.join(RULES)}")
    return [cls(**params.get(name, {})).evaluate(profile) for name, cls in RULES.items()]
