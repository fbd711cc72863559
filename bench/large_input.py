"""Real large photos into the model (``python -m bench input --photos large``): decoding them scaled against in full.

1. Per image, one process, on the set's 12-15 MP JPEGs (medians over the files): today's full decode + preprocess
   (every pixel, then the resize, crop and normalisation serving does), ours (``byoc_images`` scaled decoding, then the
   same), and libjpeg-turbo's bare DCT-scaled decode of the same file at the same scale (its own limit for ours).
2. The trainer's decoded-image cache built from the set's photos (2-15 MP, JPEG and PNG; then its JPEGs alone) with
   ``--decode scaled`` and ``--decode exact``, each in a process of its own (images/s, peak RSS of the builder and its
   workers), then the epochs read from it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.machine import describe
from bench.photos import REPO, large_photo_files
from bench.report import save

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LARGE = 12_000_000  # the decode comparison's photos: 12-15 MP, what phones take


def per_image(files: list[Path], reps: int) -> dict:
    """Milliseconds per image of each way to turn a file into the network's input (median over files of the best
    rep)."""
    from byoc_images import Fit, open_rgb
    from byoc_images.fit import draft_jpeg
    from serve.artifact import ModelSpec
    from serve.preprocess import to_input

    spec = ModelSpec(None, [], 256, 224, *IMAGENET, "bilinear", None, "input", "logits", "resnet50")
    scaled, exact = Fit(256, "bilinear", "scaled"), Fit(256, "bilinear", "exact")

    def bare(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as img:
            draft_jpeg(img, scaled)  # the same DCT scale ours decodes at, nothing else
            img.load()

    ways = {
        "full_decode_ms": lambda data: to_input(open_rgb(data, fit=exact), spec),
        "ours_scaled_ms": lambda data: to_input(open_rgb(data, fit=scaled), spec),
        "bare_dct_scaled_decode_ms": bare,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for path in files:
        data = path.read_bytes()
        for name, way in ways.items():
            best = float("inf")
            for _ in range(reps):
                started = time.perf_counter()
                way(data)
                best = min(best, time.perf_counter() - started)
            times[name].append(1000 * best)
    out = {name: round(statistics.median(values), 1) for name, values in times.items()}
    out["ours_speedup_vs_full"] = round(out["full_decode_ms"] / out["ours_scaled_ms"], 2)
    out["ours_vs_bare_dct_scaled"] = round(out["ours_scaled_ms"] / out["bare_dct_scaled_decode_ms"], 2)
    out["files"] = len(files)
    return out


def build_cache(folder: Path, cache: Path, decode: str, epochs: int, batch: int) -> dict:
    """Child process: the decoded-image cache of ``folder`` built as the trainer does (every core), then ``epochs``
    epochs of the trainer's augmentation read from it; prints one JSON line."""
    from torch.utils.data import DataLoader

    from train.cores import core_share
    from train.data import collate_skipping, loader_settings
    from train.decoded_cache import CachedImageDataset, open_or_build
    from train.sources import FolderSource, Split
    from train.transforms import Preprocess, train_pixels

    pre = Preprocess(256, 224, *IMAGENET, decode=decode)
    source = FolderSource(folder)
    started = time.perf_counter()
    entry = open_or_build(source, pre, cache, core_share(), strict=True)
    seconds = time.perf_counter() - started
    workers, prefetch = loader_settings(None)
    dataset = CachedImageDataset(Split(source, list(range(len(source)))), entry, train_pixels(pre, "light"))
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        prefetch_factor=prefetch,
        collate_fn=collate_skipping,
    )
    rates = []
    for _ in range(epochs):
        begun, seen = time.perf_counter(), 0
        for images, _labels, _skipped in loader:
            seen += len(images)
        rates.append(round(seen / (time.perf_counter() - begun), 1))
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return {
        "images": len(source),
        "build_seconds": round(seconds, 1),
        "build_images_per_sec": round(len(source) / seconds, 1),
        "peak_rss_mb": round(peak / 1024),
        "epochs_images_per_sec": rates,
    }


def cache_runs(files: list[Path], epochs: int, batch: int) -> dict:
    """``build_cache`` for each decode, each in a fresh process on the same folder of photos (one class)."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        folder = Path(tmp) / "photos" / "all"
        folder.mkdir(parents=True)
        for path in files:
            (folder / path.name).symlink_to(path)
        for decode in ("exact", "scaled"):
            args = [
                "--child",
                decode,
                "--data",
                str(folder.parent),
                "--cache",
                str(Path(tmp) / f"cache-{decode}"),
                "--epochs",
                str(epochs),
                "--batch",
                str(batch),
            ]
            done = subprocess.run(
                [sys.executable, "-m", "bench.large_input", *args], cwd=REPO, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"building the decoded-image cache ({decode}) failed:\n{done.stderr[-3000:]}")
            runs[decode] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"decoded-image cache, {decode} decoding: {runs[decode]}", flush=True)
    runs["build_speedup_scaled_vs_exact"] = round(
        runs["scaled"]["build_images_per_sec"] / runs["exact"]["build_images_per_sec"], 2
    )
    runs["peak_rss_scaled_vs_exact"] = round(runs["scaled"]["peak_rss_mb"] / runs["exact"]["peak_rss_mb"], 2)
    return runs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench input --photos large",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--photos", choices=("large",), default="large")
    parser.add_argument("--images", type=int, default=1000, help="photos of the large set the cache is built from")
    parser.add_argument("--decode-files", type=int, default=40, help="12-15 MP JPEGs of the per-image comparison")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs read from the cache after building it")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", choices=("exact", "scaled"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(build_cache(args.data, args.cache, args.child, args.epochs, args.batch)))
        return {}
    files = large_photo_files(args.images)
    jpegs = [p for p in files if p.suffix == ".jpg"]
    big = [p for p in jpegs if pixels(p) >= LARGE][: args.decode_files] or jpegs[
        : args.decode_files
    ]  # a smoke run's few photos
    decode = per_image(big, args.reps)
    print(f"per image: {decode}", flush=True)
    report = {
        "machine": describe(),
        "photos": {
            "count": len(files),
            "megapixels": megapixel_range(files),
            "gigabytes": round(sum(p.stat().st_size for p in files) / 1e9, 2),
        },
        "resize": 256,
        "crop": 224,
        "reps": args.reps,
        "per_image": decode,
        "cache": cache_runs(files, args.epochs, args.batch),
        "cache_jpeg_only": cache_runs(jpegs, args.epochs, args.batch),  # the PNGs' zlib inflate has no scaled shortcut
    }
    save("large_input.json", report)
    return report


def pixels(path: Path) -> int:
    with Image.open(path) as img:
        return img.size[0] * img.size[1]


def megapixel_range(files: list[Path]) -> list[float]:
    sizes = [pixels(p) / 1e6 for p in files]
    return [round(min(sizes), 1), round(statistics.median(sizes), 1), round(max(sizes), 1)]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
