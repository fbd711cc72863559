"""Training cost as the data grows: the trainer on 6,000, 20,000 and all 70,000 real Fashion-MNIST photos.

The photos are written once as an ImageFolder of 64 px PNGs (the 60,000 train and 10,000 test photos, upscaled);
each size is a balanced prefix of it. For each size, one ``python -m train`` run (ResNet-18, random init, all layers
trained, the ``light`` augmentation read from the decoded-image cache, a fresh cache folder) gives: the time to
build the decoded-image cache (from the trainer's log line), the first epoch's time and images/s (its metric line),
and the memory of the trainer's process tree sampled every 0.2 s from ``/proc``: private memory (anonymous + shared
memory: what the processes hold themselves) and file-backed pages (the memory-mapped cache: page cache the kernel can
drop and re-read). Then, on the full set, a head-only run with the frozen-backbone feature cache.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import describe
from bench.photos import REPO
from bench.report import save
from bench.train_finetune import REGEX, fashion_mnist

CACHE_LINE = re.compile(
    r"decoded-image cache: (\d+) images decoded once into .* \(([0-9.]+) GB, ([0-9.]+) s, ([0-9.]+) images/s\)"
)
FEATURES_LINE = re.compile(r"cached train features: (\d+) x \d+ in ([0-9.]+) s")


def write_photos(root: Path, side: int, count: int) -> list[Path]:
    """The first ``count`` of the 70,000 photos (train then test) as root/<class>/<n>.png at ``side`` px, balanced
    across classes; returned interleaved by class, so that every prefix is balanced too."""
    train, test = fashion_mnist.load("train"), fashion_mnist.load("t10k")
    images, labels = np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])
    per_class = [np.flatnonzero(labels == c)[: -(-count // 10)] for c in range(10)]
    photos = []
    for i in np.stack(per_class, axis=1).reshape(-1)[:count]:
        path = root / fashion_mnist.CLASSES[labels[i]] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").resize((side, side), Image.BILINEAR).save(path)
        photos.append(path)
    return photos


def subset(photos: list[Path], count: int, root: Path) -> Path:
    """The first ``count`` photos (balanced across classes), hard-linked into root/<class>/."""
    for path in photos[:count]:
        target = root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return root


def _bytes(fields: dict[str, str], name: str) -> int:
    """A /proc status field given in kB (``RssAnon:  1234 kB``), in bytes; 0 when absent."""
    return int(fields.get(name, "0 kB").split()[0]) * 1024


def tree_memory(pid: int) -> tuple[int, int]:
    """(private bytes, file-backed bytes) of ``pid`` and its descendants, from /proc/<pid>/status."""
    private = mapped = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{current}/status").read_text().splitlines() if ":" in line
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        private += _bytes(fields, "RssAnon") + _bytes(fields, "RssShmem")
        mapped += _bytes(fields, "RssFile")
    return private, mapped


def run_trainer(name: str, data: Path, work: Path, flags: list[str]) -> dict:
    """One ``python -m train`` run with its memory sampled; its timings parsed from the log and metric lines."""
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(work / name), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "train",
        "--train",
        str(data),
        "--decoded-cache",
        str(work / name / "cache"),
        *flags,
    ]
    peaks = {"private": 0, "mapped": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while process.poll() is None:
            private, mapped = tree_memory(process.pid)
            peaks["private"], peaks["mapped"] = max(peaks["private"], private), max(peaks["mapped"], mapped)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    epoch = next(line for line in stdout.splitlines() if line.startswith("epoch="))
    out = {
        "name": name,
        "wall_seconds": round(wall, 1),
        "epoch_seconds": round(float(REGEX["epoch_seconds"].search(epoch).group(1)), 2),
        "images_per_sec": round(float(REGEX["images_per_sec"].search(epoch).group(1)), 1),
        "peak_private_mb": round(peaks["private"] / 1e6),
        "peak_file_backed_mb": round(peaks["mapped"] / 1e6),
    }
    cache = CACHE_LINE.search(stderr)
    if cache:
        out |= {
            "cache_images": int(cache.group(1)),
            "cache_gb": float(cache.group(2)),
            "cache_build_seconds": float(cache.group(3)),
        }
    features = FEATURES_LINE.search(stderr)
    if features:
        out |= {"feature_images": int(features.group(1)), "feature_seconds": float(features.group(2))}
    print(f"{name}: {out}", flush=True)
    return out


def linearity(runs: list[dict], key: str) -> float:
    """Cost per image of the largest run over that of the smallest (1.0: exactly linear)."""
    first, last = runs[0], runs[-1]
    return round((last[key] / last["images"]) / (first[key] / first["images"]), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[6000, 20000, 70000], help="photos per run (at most 70,000)"
    )
    parser.add_argument("--side", type=int, default=64, help="side of the PNGs and of the network input, px")
    parser.add_argument("--model", default="resnet18", help="the network trained at every size")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    common = [
        "--model",
        args.model,
        "--pretrained",
        "none",
        "--image-size",
        str(args.side),
        "--resize-size",
        str(args.side),
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",
        "--profiler-interval",
        "0",
        "--quantize",
        "off",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        photos = write_photos(work / "all", args.side, max(args.sizes))
        print(f"wrote {len(photos)} PNGs in {time.perf_counter() - started:.0f} s", flush=True)
        runs = []
        for size in args.sizes:
            data = subset(photos, size, work / f"data-{size}")
            runs.append(
                {
                    "images": size,
                    **run_trainer(f"full-{size}", data, work, [*common, "--finetune", "full", "--augment", "light"]),
                }
            )
        head = {
            "images": args.sizes[-1],
            **run_trainer(
                "head-cached",
                work / f"data-{args.sizes[-1]}",
                work,
                [*common, "--finetune", "head", "--augment", "none"],
            ),
        }
    report = {
        "machine": describe(),
        "model": f"{args.model}, random init, {args.side} px, batch {args.batch_size}, bf16 autocast where the "
        "CPU has it",
        "png_side_px": args.side,
        "runs": runs,
        "head_only_cached": head,
        "per_image_cost_ratio": {key: linearity(runs, key) for key in ("cache_build_seconds", "epoch_seconds")},
        "private_memory_ratio": round(runs[-1]["peak_private_mb"] / runs[0]["peak_private_mb"], 2),
    }
    save("train_scale.json", report)
    return report


if __name__ == "__main__":
    main()
