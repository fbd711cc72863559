"""HTTP serving of real large photos (``python -m bench serve --photos large``): ours against the peers, one run.

The bodies are JPEGs of the large real-photo set (tests/large_photos.py) of 3 to 15 MP and at most 6 MB (SageMaker's
real-time payload limit), sent as users send them. The same ResNet-50 artifact and servers as ``bench serve``: ours
in int8 (SERVE_PRECISION=auto) and bf16, each with scaled decoding (the default) and SERVE_DECODE=exact (every pixel,
as before), and TorchServe 0.12 and Ray Serve 2.60 at their default and best configurations (both decode every pixel,
as their handlers do). For ours, the server's own stage timers (``byoc_stage_seconds_per_image`` on /metrics) split
each image's time into decoding + preprocessing and the model run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
from pathlib import Path

from PIL import Image

from bench.machine import describe
from bench.photos import large_photo_files
from bench.report import save
from bench.serve_http import (
    BF16,
    INT8,
    Server,
    build_peer,
    make_artifact,
    measure,
    median_points,
    peer_servers,
    pick_best_mode,
)

MAX_BODY = 6 * 1024 * 1024  # SageMaker's real-time payload limit
SCALED, EXACT = "", ", SERVE_DECODE=exact"


def bodies(count: int) -> list[bytes]:
    """Up to ``count`` JPEGs of 3-15 MP and at most 6 MB from the large set, in its order."""
    out = []
    for path in large_photo_files(6 * count):
        with Image.open(path) as img:
            fits = img.format == "JPEG" and img.size[0] * img.size[1] >= 3_000_000
        if fits and path.stat().st_size <= MAX_BODY:
            out.append(path.read_bytes())
        if len(out) == count:
            break
    return out


def stage_split(port: int) -> dict:
    """Milliseconds per image in each stage, from the server's /metrics (sum / count of the stage histogram)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    values = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            for stage in ("decode", "model"):
                if line.startswith(f'byoc_stage_seconds_per_image_{part}{{stage="{stage}"}}'):
                    values[(stage, part)] = float(line.split()[-1])
    split = {
        f"{stage}_ms_per_image": round(1000 * values[(stage, "sum")] / max(values[(stage, "count")], 1), 1)
        for stage in ("decode", "model")
    }
    split["decode_vs_model"] = round(split["decode_ms_per_image"] / max(split["model_ms_per_image"], 1e-9), 2)
    return split


def lineup(image: str, peers: dict[str, str], best_mode: str) -> list[Server]:
    """Ours in int8 and bf16, scaled and exact, then the peers at their default and best."""
    ours = [Server(INT8 + SCALED, image), Server(INT8 + EXACT, image, {"SERVE_DECODE": "exact"})]
    ours += [
        Server(BF16 + SCALED, image, {"SERVE_PRECISION": "bf16"}),
        Server(BF16 + EXACT, image, {"SERVE_PRECISION": "bf16", "SERVE_DECODE": "exact"}),
    ]
    return ours + peer_servers(peers, best_mode)


def targets(runs: list[dict], top: int) -> dict:
    """Ours int8 (scaled) at concurrency ``top`` against the best peer at its best and against ours with exact
    decoding."""
    rate = {run["name"]: next(p for p in run["points"] if p["concurrency"] == top)["images_per_sec"] for run in runs}
    out = {
        "concurrency": top,
        "int8_images_per_sec": rate[INT8],
        "int8_scaled_vs_exact": round(rate[INT8] / rate[INT8 + EXACT], 2),
    }
    best = {name: value for name, value in rate.items() if " best:" in name}
    if best:
        name = max(best, key=best.get)
        out |= {"best_peer_best": name, "int8_vs_best_peer_best": round(rate[INT8] / best[name], 2)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench serve --photos large",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--photos", choices=("large",), default="large")
    parser.add_argument("--image", default="byoc-vision-serve:bench", help="our serving image (built when missing)")
    parser.add_argument("--torch-image", default=None, help=argparse.SUPPRESS)  # bench all passes it to both modes
    parser.add_argument("--peers", choices=("all", "none"), default="all")
    parser.add_argument("--bodies", type=int, default=48, help="large JPEGs the clients cycle through")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args(argv)
    sent = bodies(args.bodies)
    peers = {target: build_peer(target) for target in ("torchserve", "rayserve")} if args.peers == "all" else {}
    modes = pick_best_mode(peers["torchserve"]) if peers else None
    servers = lineup(args.image, peers, modes["best"] if modes else "eager")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp), ("--quantize", "force"))
        for server in servers:
            run = median_points(
                [
                    measure(
                        server,
                        model,
                        sent,
                        args.levels,
                        args.seconds,
                        stage_split if server.image == args.image else None,
                    )
                ]
            )
            runs.append(run)
    top = 16 if 16 in args.levels else args.levels[-1]
    report = {
        "machine": describe(),
        "model": "resnet50 (224 px crop of a 256 px resize), 10 classes",
        "jpeg": {
            "count": len(sent),
            "mean_megapixels": round(statistics.mean(megapixels(b) for b in sent), 1),
            "mean_bytes": round(statistics.mean(map(len, sent))),
        },
        "seconds_per_point": args.seconds,
        "peer_modes": modes,
        "runs": runs,
        "targets": targets(runs, top),
    }
    save("serve_large.json", report)
    print(json.dumps(report["targets"], indent=2))
    return report


def megapixels(body: bytes) -> float:
    import io

    with Image.open(io.BytesIO(body)) as img:
        return img.size[0] * img.size[1] / 1e6
