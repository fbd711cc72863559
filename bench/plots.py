"""One PNG per benchmark for docs/benchmarks.md (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(name: str, result: dict, folder: Path) -> Path | None:
    """The figure for results file ``name``, written into ``folder``; None when there is nothing to draw."""
    painter = PAINTERS.get(name)
    if painter is None or "skipped" in result:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(name).stem}.png"
    figure = painter(result)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _bars(axis, labels: list[str], stats: list[dict], title: str, unit: str) -> None:
    """Median bars with min-max whiskers."""
    medians = [s["median"] for s in stats]
    errors = [
        [m - s["min"] for m, s in zip(medians, stats, strict=False)],
        [s["max"] - m for m, s in zip(medians, stats, strict=False)],
    ]
    axis.barh(labels, medians, xerr=errors, color="#4c72b0", capsize=4)
    axis.set_title(title)
    axis.set_xlabel(unit)
    axis.invert_yaxis()


def input_pipeline(r: dict):
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    measured = {k: v for k, v in r["per_core"].items() if "pipeline" in v}
    _bars(
        left,
        list(measured),
        [v["pipeline"] for v in measured.values()],
        "decode + augment + collate, one core",
        "images/s",
    )
    labels = [f"{row['workers']}w p{row['prefetch'] or '-'}{' (auto)' if row['auto'] else ''}" for row in r["sweep"]]
    middle.bar(
        labels,
        [row["images_per_sec"] for row in r["sweep"]],
        color=["#dd8452" if row["auto"] else "#4c72b0" for row in r["sweep"]],
    )
    middle.set_title("DataLoader workers x prefetch")
    middle.set_ylabel("images/s")
    middle.tick_params(axis="x", rotation=30)
    epochs = range(1, len(r["epochs"]["plain_imagefolder"]) + 1)
    right.plot(epochs, r["epochs"]["plain_imagefolder"], "o-", label="plain ImageFolder")
    right.plot(epochs, r["epochs"]["ours_with_cache"], "o-", label="ours, decoded-image cache")
    right.set_xticks(list(epochs))
    right.set_xlabel("epoch")
    right.set_ylabel("images/s")
    right.set_title("same run, per epoch")
    right.legend()
    return figure


def train_gpu(r: dict):
    figure, axis = plt.subplots(figsize=(9, 3.5))
    measured = {k: v for k, v in r["runs"].items() if "median" in v}
    _bars(
        axis, list(measured), list(measured.values()), f"{r['settings']['model']} training, {r['device']}", "images/s"
    )
    axis.axvline(r["peer"]["images_per_sec"], color="grey", linestyle="--", label=r["peer"]["name"])
    axis.legend(loc="lower right", fontsize=8)
    return figure


def train_finetune(r: dict):
    figure, axis = plt.subplots(figsize=(8, 3))
    runs = r["runs"]
    axis.barh(
        [f"{run['name']} ({run['epochs']} epochs)" for run in runs],
        [run["wall_seconds"] for run in runs],
        color="#4c72b0",
    )
    axis.set_xlabel("wall time (s)")
    axis.set_title("fine-tuning EfficientNet-Lite0 on Fashion-MNIST")
    axis.invert_yaxis()
    return figure


def train_scale(r: dict):
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    photos = [run["images"] for run in r["runs"]]
    time_axis.plot(photos, [run["epoch_seconds"] for run in r["runs"]], "o-", label="epoch")
    time_axis.plot(photos, [run["cache_build_seconds"] for run in r["runs"]], "s-", label="decoded-image cache build")
    time_axis.set_xlabel("photos")
    time_axis.set_ylabel("seconds")
    time_axis.set_title("time grows linearly")
    time_axis.legend(fontsize=8)
    memory_axis.plot(photos, [run["peak_private_mb"] for run in r["runs"]], "o-", label="private (anonymous + shm)")
    memory_axis.plot(
        photos, [run["peak_file_backed_mb"] for run in r["runs"]], "s--", label="file-backed (mapped cache, libraries)"
    )
    memory_axis.set_xlabel("photos")
    memory_axis.set_ylabel("peak MB, trainer + workers")
    memory_axis.set_ylim(bottom=0)
    memory_axis.set_title("memory stays flat")
    memory_axis.legend(fontsize=8)
    return figure


def serve_http(r: dict):
    figure, axis = plt.subplots(figsize=(8, 4))
    for run in r["runs"]:
        levels = [p["concurrency"] for p in run["points"]]
        axis.plot(levels, [p["images_per_sec"] for p in run["points"]], "o-", label=run["name"])
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("images/s")
    axis.set_title("serving ResNet-50 over HTTP")
    axis.legend(fontsize=7)
    return figure


def bf16_agreement(r: dict):
    figure, axis = plt.subplots(figsize=(7, 3.5))
    speed = axis.twinx()
    for runtime, colour in (("openvino bf16", "#4c72b0"), ("openvino int8", "#55a868")):
        rows = [row for row in r["rows"] if row["margin"] is not None and row["runtime"] == runtime]
        axis.plot(
            [row["margin"] for row in rows],
            [row["agreement"] for row in rows],
            "o-",
            color=colour,
            label=f"{runtime}: agreement",
        )
        speed.plot(
            [row["margin"] for row in rows],
            [row["images_per_sec"] for row in rows],
            "s--",
            color=colour,
            alpha=0.5,
            label=f"{runtime}: images/s",
        )
    axis.set_xlabel("re-check margin")
    axis.set_ylabel("top-1 agreement with fp32")
    speed.set_ylabel("images/s (dashed)")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title("OpenVINO bf16 and int8 against fp32")
    return figure


def rules_overhead(r: dict):
    figure, axis = plt.subplots(figsize=(7, 3))
    labels = ["rules off: training", "rules on: training", "rules on: rule evaluation"]
    _bars(
        axis,
        labels,
        [r["train_seconds"]["off"], r["train_seconds"]["on"], r["rule_seconds"]],
        "In-job Debugger rules, same run",
        "seconds",
    )
    return figure


def soak(r: dict):
    figure, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    rows = r["timeline"]
    minutes = [row["t"] / 60 for row in rows]
    for axis, key, label in zip(
        axes,
        ("images_per_sec", "ping_p99_ms", "memory_mb"),
        ("good images/s", "/ping p99 (ms)", "memory (MB)"),
        strict=False,
    ):
        axis.plot(minutes, [row[key] for row in rows], "-")
        axis.set_ylabel(label, fontsize=8)
        axis.set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes")
    axes[0].set_title(f"soak: {r['seconds'] / 60:.0f} min at saturation, --memory {r['memory_limit']}")
    return figure


def memory_burst(r: dict):
    """Warm, peak and settled memory of each variant, grouped bars."""
    names = list(r["variants"])
    figure, axis = plt.subplots(figsize=(8, 3.2))
    for offset, key, colour in (
        (-0.27, "warm_mb", "#55a868"),
        (0, "peak_mb", "#c44e52"),
        (0.27, "settled_mb", "#4c72b0"),
    ):
        axis.barh(
            [i + offset for i in range(len(names))],
            [r["variants"][n][key] for n in names],
            height=0.27,
            color=colour,
            label=key.removesuffix("_mb"),
        )
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("MB (docker stats)")
    axis.set_title(
        f"memory after {r['clients']} clients posted {r['photo_bytes'] / 1e6:.1f} MB photos for {r['seconds']:g} s"
    )
    axis.legend(fontsize=8)
    return figure


def runs_bars(title: str):
    """A painter for results whose ``runs`` each have images/s: median bars, titled ``title`` (formatted with the
    result)."""

    def paint(r: dict):
        figure, axis = plt.subplots(figsize=(7, 2.8))
        _bars(
            axis,
            [run["label"] for run in r["runs"]],
            [run["images_per_sec"] for run in r["runs"]],
            title.format(**r),
            "images/s",
        )
        return figure

    return paint


PAINTERS = {
    "input_pipeline.json": input_pipeline,
    "train_gpu.json": train_gpu,
    "train_finetune.json": train_finetune,
    "train_scale.json": train_scale,
    "serve_http.json": serve_http,
    "bf16_agreement.json": bf16_agreement,
    "rules_overhead.json": rules_overhead,
    "serve_path.json": runs_bars("ResNet-50, concurrency {concurrency}, same run"),
    "http_ceiling.json": runs_bars("ResNet-50 int8 against the path alone, concurrency {concurrency}"),
    "explain_cost.json": runs_bars("ResNet-50 fp32, requests with and without explain=cam, concurrency {concurrency}"),
    "soak.json": soak,
    "memory_burst.json": memory_burst,
}
