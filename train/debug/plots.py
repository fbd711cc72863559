"""The profiling report's figures, drawn with matplotlib (Agg) and saved as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from train.debug.profiler_rules import COMPUTE, Profile


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss (train, valid) and accuracy (train, valid) per epoch."""
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = [row["epoch"] for row in history]
    for axis, metric in ((loss, "loss"), (acc, "acc")):
        for split in ("train", "valid"):
            values = [row.get(f"{split}_{metric}") for row in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker="o", label=split)
        axis.set(xlabel="epoch", title={"loss": "loss", "acc": "accuracy"}[metric])
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
        axis.grid(alpha=0.3)
    return _save(fig, path)


def utilisation(profile: Profile, path: Path) -> Path:
    """CPU (total and per core), memory, and per GPU utilisation and memory over time."""
    rows = 2 if profile.has_gpu else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3 * rows), squeeze=False)
    start = profile.samples[0]["time"] if profile.samples else 0.0
    t = np.array([s["time"] - start for s in profile.samples])
    cpu = axes[0][0]
    if profile.samples:
        cores = np.array([s["cores"] for s in profile.samples])
        for i in range(cores.shape[1]):
            cpu.plot(t, cores[:, i], lw=0.6, alpha=0.5, label=f"core {i}" if cores.shape[1] <= 8 else None)
        cpu.plot(t, [s["cpu"] for s in profile.samples], lw=2, color="black", label="CPU total")
        cpu.plot(t, [s["memory"] for s in profile.samples], lw=1.5, ls="--", color="tab:purple", label="memory")
        cpu.plot(t, [s["iowait"] for s in profile.samples], lw=1, color="tab:red", label="I/O wait")
    cpu.set(ylabel="%", ylim=(0, 105), title="CPU, memory and I/O wait", xlabel="seconds")
    cpu.legend(loc="upper right", fontsize=7, ncol=3)
    if profile.has_gpu:
        gpu = axes[1][0]
        rows_gpu = [(s["time"] - start, s["gpus"]) for s in profile.samples if s["gpus"]]
        for i in range(len(rows_gpu[0][1])):
            gpu.plot([r[0] for r in rows_gpu], [r[1][i]["util"] for r in rows_gpu], label=f"GPU {i} utilisation")
            gpu.plot([r[0] for r in rows_gpu], [r[1][i]["memory"] for r in rows_gpu], ls="--", label=f"GPU {i} memory")
        gpu.set(ylabel="%", ylim=(0, 105), title="GPU", xlabel="seconds")
        gpu.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def step_histogram(profile: Profile, path: Path) -> Path:
    """Distribution of step times, with the p50/p90/p99 marked."""
    ms = profile.step_seconds() * 1000
    fig, axis = plt.subplots(figsize=(10, 3))
    if len(ms):
        axis.hist(ms, bins=min(50, max(5, len(ms) // 4)), color="tab:blue", alpha=0.8)
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            value = np.percentile(ms, q)
            axis.axvline(value, color="black", ls=style, label=f"p{q} {value:.0f} ms")
        axis.legend()
    axis.set(xlabel="step time (ms)", ylabel="steps", title="Step time")
    return _save(fig, path)


def time_breakdown(profile: Profile, path: Path) -> Path:
    """Per epoch, seconds spent waiting for data and in forward, backward and optimizer."""
    epochs = sorted({s["epoch"] for s in profile.steps})
    fig, axis = plt.subplots(figsize=(10, 3))
    bottom = np.zeros(len(epochs))
    for phase in ("data", *COMPUTE):
        values = np.array([sum(s.get(phase, 0.0) for s in profile.steps if s["epoch"] == e) for e in epochs])
        axis.bar([str(e) for e in epochs], values, bottom=bottom, label=phase)
        bottom += values
    axis.set(xlabel="epoch", ylabel="seconds", title="Where the training time goes")
    axis.legend(ncol=4)
    return _save(fig, path)


def reliability_diagram(calibration: dict, path: Path, title: str) -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling (``metrics.json``'s calibration)."""
    fig, axis = plt.subplots(figsize=(6.5, 5))
    axis.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    for when, colour in (("before", "tab:red"), ("after", "tab:blue")):
        rows = [r for r in calibration[f"reliability_{when}"] if r["count"]]
        label = f"{when} (ECE {calibration[f'ece_{when}']:.3f}, NLL {calibration[f'nll_{when}']:.3f})"
        if when == "after":
            label += f", T = {calibration['temperature']:.2f}"
        axis.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color=colour, label=label)
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy", title=title)
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)
    return _save(fig, path)
