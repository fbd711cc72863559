"""CPU input pipeline: decode + augment + collate, per core and through the DataLoader, and the decoded-image cache.

1. Per core (one process, no workers): images/s of decode + the trainer's ``light`` augmentation (random resized
   crop, flip, normalise) + collate into batches (pinned when CUDA is present) for PIL,
   ``torchcodec.decoders.decode_jpeg``
   (torchvision 0.29 deprecates its own decoders for it),
   Pillow-SIMD (a separate install, when it builds) and reads from the decoded-image cache.
2. Workers x prefetch sweep of the trainer's DataLoader, with the ``--workers auto`` choice marked.
3. Same run, per epoch: a plain ``torchvision.datasets.ImageFolder`` DataLoader against the trainer's loader with the
   decoded-image cache (epoch 1 includes building it); then a second "trial" opening the same cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bench.machine import describe
from bench.photos import REPO, photos_choice, write_jpeg_folder
from bench.report import save
from bench.stats import rate, summary
from byoc_machine import usable_cores
from train.data import ImageDataset, collate_skipping, core_share, loader_settings
from train.decoded_cache import CachedImageDataset, open_or_build
from train.engine import DeviceInput
from train.sources import FolderSource, Split
from train.transforms import Preprocess, train_pixels

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SIMD_DIR = Path.home() / ".cache" / "byoc-vision" / "pillow-simd"


def per_core(decoder: str, files: list[Path], pre: Preprocess, batch: int, reps: int) -> dict:
    """Images/s of one process: decode with ``decoder``, augment, collate (pin when CUDA is present)."""
    from torchcodec.decoders import decode_jpeg

    augment = train_pixels(pre, "light")
    inputs = device_input()
    pin = torch.cuda.is_available()
    decode = {
        "pil": lambda path: Image.open(path).convert("RGB"),
        "torchcodec": lambda path: decode_jpeg(str(path), mode="RGB"),
    }[decoder]

    def work() -> int:
        for start in range(0, len(files), batch):
            images = torch.stack([augment(decode(path)) for path in files[start : start + batch]])
            inputs(images.pin_memory() if pin else images)
        return len(files)

    return {
        "decode_only": rate(lambda: sum(1 for path in files if decode(path) is not None), reps),
        "pipeline": rate(work, reps),
    }


def cached_per_core(split: Split, entry, pre: Preprocess, batch: int, reps: int) -> dict:
    """The same pipeline reading uint8 squares from the decoded-image cache instead of decoding."""
    dataset = CachedImageDataset(split, entry, train_pixels(pre, "light"))
    inputs = device_input()

    def work() -> int:
        for start in range(0, len(dataset), batch):
            inputs(collate_skipping([dataset[i] for i in range(start, min(start + batch, len(dataset)))])[0])
        return len(dataset)

    return {"pipeline": rate(work, reps)}


def pillow_simd(args: argparse.Namespace, folder: Path) -> dict:
    """Per-core numbers with Pillow-SIMD, installed once into ~/.cache; the reason when it does not install."""
    if args.pillow_simd == "no":
        return {"skipped": "--pillow-simd no"}
    if not (SIMD_DIR / "PIL").is_dir():
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(SIMD_DIR), "pillow-simd"],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            return {"skipped": f"pip install pillow-simd failed: {install.stderr.strip().splitlines()[-1:]}"}
    command = [
        sys.executable,
        "-m",
        "bench.input_pipeline",
        "--per-core-only",
        "--data",
        str(folder),
        *args.passthrough,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SIMD_DIR), str(REPO)])}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {"skipped": f"the Pillow-SIMD run failed: {result.stderr.strip()[-500:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def device_input() -> DeviceInput:
    """The trainer's last step: batch onto the device (the GPU when present), uint8 normalised there."""
    return DeviceInput(torch.device("cuda" if torch.cuda.is_available() else "cpu"), False, *IMAGENET)


def loader_rate(dataset, workers: int, prefetch: int | None, batch: int, epochs: int) -> list[float]:
    """Images/s of each epoch through a DataLoader and onto the device (persistent workers; pinned when CUDA is
    present)."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        prefetch_factor=prefetch,
        persistent_workers=workers > 0,
        collate_fn=collate_skipping if isinstance(dataset, (ImageDataset, CachedImageDataset)) else None,
        pin_memory=torch.cuda.is_available(),
    )
    rates, inputs = [], device_input()
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        for images, _labels, *_ in loader:
            seen += len(inputs(images))
        rates.append(seen / (time.perf_counter() - started))
    return rates


def plain_imagefolder(folder: Path, crop: int):
    """torchvision's ImageFolder with the classic v1 transforms: what the course notebooks use."""
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(crop, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*IMAGENET),
        ]
    )
    return datasets.ImageFolder(str(folder), tf)


def main(argv: list[str] | None = None) -> dict:
    if photos_choice(argv) == "large":  # real 2-15 MP photos: bench/large_input.py
        from bench import large_input

        return large_input.main(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--photos",
        choices=("small",),
        default="small",
        help="large: real 2-15 MP photos instead (python -m bench input --photos large --help)",
    )
    parser.add_argument("--images", type=int, default=2000, help="real photos in the JPEG folder")
    parser.add_argument("--side", type=int, default=320, help="side of the JPEG files in px")
    parser.add_argument("--crop", type=int, default=224, help="training resolution")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the same-run comparison")
    parser.add_argument("--pillow-simd", choices=("try", "no"), default="try")
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--per-core-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.passthrough = ["--crop", str(args.crop), "--batch", str(args.batch), "--reps", str(args.reps)]
    pre = Preprocess(resize=round(args.crop / 0.875), crop=args.crop, mean=IMAGENET[0], std=IMAGENET[1])
    if args.per_core_only:  # the Pillow-SIMD child: PIL here is Pillow-SIMD
        files = FolderSource(args.data).files
        print(json.dumps({"version": PIL.__version__, **per_core("pil", files, pre, args.batch, args.reps)}))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpeg_folder(Path(tmp) / "jpeg", args.images, args.side)
        source = FolderSource(folder)
        split = Split(source, list(range(len(source))))
        workers, prefetch = loader_settings(None)
        decoders = {
            f"PIL {PIL.__version__}": per_core("pil", source.files, pre, args.batch, args.reps),
            "torchcodec.decoders.decode_jpeg": per_core("torchcodec", source.files, pre, args.batch, args.reps),
        }
        simd = pillow_simd(args, folder)
        decoders[f"Pillow-SIMD {simd.get('version', '')}".strip()] = simd
        print(f"per core: {decoders}", flush=True)

        sweep = []
        for count in range(0, usable_cores() + 1):
            for depth in (None,) if count == 0 else (2, 4):
                rates = loader_rate(
                    ImageDataset(split, train_pixels(pre, "light"), strict=False, fit=pre.fit(resize=False)),
                    count,
                    depth,
                    args.batch,
                    2,
                )
                sweep.append(
                    {
                        "workers": count,
                        "prefetch": depth,
                        "images_per_sec": round(rates[-1], 1),
                        "auto": (count, depth) == (workers, prefetch),
                    }
                )
                print(f"workers={count} prefetch={depth}: {rates[-1]:.0f} images/s", flush=True)

        plain = loader_rate(plain_imagefolder(folder, args.crop), workers, prefetch, args.batch, args.epochs)
        cache_root = Path(tmp) / "decoded-cache"
        started = time.perf_counter()
        entry = open_or_build(
            source, pre, cache_root, core_share(), strict=False
        )  # as the trainer builds it: every core
        build_seconds = time.perf_counter() - started
        cached_epochs = loader_rate(
            CachedImageDataset(split, entry, train_pixels(pre, "light")), workers, prefetch, args.batch, args.epochs
        )
        first = len(source) / (build_seconds + len(source) / cached_epochs[0])
        ours = [first, *cached_epochs[1:]]
        started = time.perf_counter()
        open_or_build(FolderSource(folder), pre, cache_root, workers, strict=False)
        reopen_seconds = time.perf_counter() - started
        decoders["decoded-image cache (uint8 memmap)"] = cached_per_core(split, entry, pre, args.batch, args.reps)
    later = summary(ours[1:]) if len(ours) > 1 else summary(ours)
    report = {
        "machine": describe(),
        "dataset": {
            "photos": args.images,
            "side_px": args.side,
            "format": "JPEG quality 90, real Fashion-MNIST photos upscaled",
        },
        "crop": args.crop,
        "resize": pre.resize,
        "batch": args.batch,
        "reps": args.reps,
        "per_core": decoders,
        "auto": {"workers": workers, "prefetch": prefetch},
        "sweep": sweep,
        "epochs": {
            "plain_imagefolder": [round(v, 1) for v in plain],
            "ours_with_cache": [round(v, 1) for v in ours],
            "cache_build_seconds": round(build_seconds, 2),
            "cache_reopen_seconds": round(reopen_seconds, 3),
            "speedup_later_vs_first": round(later["median"] / ours[0], 2),
            "speedup_later_vs_plain": round(later["median"] / summary(plain)["median"], 2),
        },
    }
    save("input_pipeline.json", report)
    print(
        f"epoch 2+ with the cache: {report['epochs']['speedup_later_vs_first']}x epoch 1, "
        f"{report['epochs']['speedup_later_vs_plain']}x plain ImageFolder"
    )
    return report


if __name__ == "__main__":
    main()
