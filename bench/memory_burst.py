"""``python -m bench burst``: the serving container's memory after a burst of large photos, with each way of giving
freed memory back, side by side in one run (issue 26: 590 MB after the burst against 184 MB warm, never returned).

For each variant: start the container on ``bench serve``'s ResNet-50 artifact, warm it with a few photos, read its
memory; ``--clients`` clients post a real multi-megabyte JPEG (Debian's plasma-workspace-wallpapers) back to back
for ``--seconds``; then, idle, read its memory every second for ``--settle`` seconds. Reported: warm, peak and
settled memory, settled / warm (the target: within 1.25), and the burst's images/s (what a variant costs).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from bench.machine import describe
from bench.report import save
from bench.serve_http import drive, make_artifact, start, stop
from bench.soak import memory_mb

WALLPAPERS = Path("/usr/share/wallpapers")
# name: the container's environment (MALLOC_ARENA_MAX=0 is glibc's default: one arena per thread, up to 8 a core)
VARIANTS = {
    "glibc defaults (no trim)": {"SERVE_MALLOC_TRIM": "off", "MALLOC_ARENA_MAX": "0"},
    "MALLOC_ARENA_MAX=2": {"SERVE_MALLOC_TRIM": "off", "MALLOC_ARENA_MAX": "2"},
    "malloc_trim when idle": {"SERVE_MALLOC_TRIM": "on", "MALLOC_ARENA_MAX": "0"},
    "malloc_trim when idle + MALLOC_ARENA_MAX=2": {
        "SERVE_MALLOC_TRIM": "on",
        "MALLOC_ARENA_MAX": "2",
    },  # as the image ships
    "MALLOC_MMAP_THRESHOLD_=1 MB": {
        "SERVE_MALLOC_TRIM": "off",
        "MALLOC_ARENA_MAX": "0",
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    },
}


def large_photo(min_bytes: int) -> bytes:
    """The smallest wallpaper photograph of at least ``min_bytes``."""
    photos = sorted(
        (p.stat().st_size, p) for p in WALLPAPERS.glob("*/contents/images/*.jpg") if p.stat().st_size >= min_bytes
    )
    if not photos:
        raise SystemExit(
            f"no JPEG of {min_bytes} bytes or more under {WALLPAPERS}: apt-get install plasma-workspace-wallpapers"
        )
    return photos[0][1].read_bytes()


def watch(name: str, until: float, samples: list[float]) -> None:
    while time.perf_counter() < until:
        samples.append(memory_mb(name))


def measure(
    image: str, model: Path, env: dict[str, str], photo: bytes, clients: int, seconds: float, settle: float
) -> dict:
    name, port, _ = start(image, model, env, ["serve"])
    try:
        drive(port, [photo], 2, 3)  # warm: the first large photos size the pools
        time.sleep(3)
        warm = memory_mb(name)
        peak: list[float] = []
        watcher = threading.Thread(target=watch, args=(name, time.perf_counter() + seconds, peak))
        watcher.start()
        burst = drive(port, [photo], clients, seconds)
        watcher.join()
        settled = []
        for _ in range(int(settle)):
            time.sleep(1)
            settled.append(memory_mb(name))
        return {
            "warm_mb": warm,
            "peak_mb": max(peak + settled),
            "settled_mb": settled[-1],
            "settled_over_warm": round(settled[-1] / warm, 2),
            "images_per_s": burst["images_per_sec"],
            "settle_timeline_mb": settled,
        }
    finally:
        stop(name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench burst", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="byoc-vision-serve:bench", help="our serving image")
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--settle", type=float, default=10, help="idle seconds after the burst before the last reading")
    parser.add_argument(
        "--min-bytes", type=int, default=4_500_000, help="the photo: the smallest wallpaper JPEG of at least this size"
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    photo = large_photo(args.min_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as work:
        model = make_artifact(Path(work))
        results = {}
        for variant in args.variants:
            results[variant] = measure(
                args.image, model, VARIANTS[variant], photo, args.clients, args.seconds, args.settle
            )
            print(f"{variant}: {results[variant]}", flush=True)
    report = {
        "machine": describe(),
        "photo_bytes": len(photo),
        "clients": args.clients,
        "seconds": args.seconds,
        "settle_seconds": args.settle,
        "variants": results,
    }
    save("memory_burst.json", report)
    return report


if __name__ == "__main__":
    main()
