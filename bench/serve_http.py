"""End-to-end HTTP serving of a ResNet-50 artifact: our serving image against the AWS default stack.

One invocation, one machine, one after the other: the ResNet-50 artifact is trained here (``python -m train``,
head only on the demo photos; the backbone weights are random because ImageNet downloads are unreachable, which
changes no timing), then each server runs in its container with the artifact mounted and is driven with JPEG
bodies at concurrency 1, 4 and 16 (keep-alive connections, one request per connection at a time). Also measured:
the image size and the cold start (``docker run`` -> first 200 on ``/ping``, median of three).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.machine import describe
from bench.photos import REPO, jpeg_photos
from bench.report import save
from bench.stats import summary

BASELINE_COMMAND = 'from sagemaker_inference import model_server; model_server.start_model_server(handler_service="bench.baseline_service:handle")'


def make_artifact(work: Path, extra: tuple[str, ...] = ()) -> Path:
    """A ResNet-50 artifact from our trainer (model.onnx, model.json, weights.safetensors; ``extra`` flags added)."""
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(work / "opt_ml")}
    args = ["--model", "resnet50", "--pretrained", "none", "--finetune", "head", "--augment", "none", "--epochs", "1", "--train", str(REPO / "demo" / "data"), *extra]
    result = subprocess.run([sys.executable, "-m", "train", *args, "--workers", "2"], cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training the ResNet-50 artifact failed:\n{result.stderr[-3000:]}")
    model = work / "opt_ml" / "model"
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    return model


def start(image: str, model: Path, env: dict[str, str], command: list[str], extra: tuple[str, ...] = ()) -> tuple[str, int, float]:
    """Run ``image`` detached with the model mounted; returns (name, port, seconds to the first 200 on /ping)."""
    name, port = f"byoc-bench-{uuid.uuid4().hex[:8]}", 18000 + int(uuid.uuid4().int % 2000)
    options = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model}:/opt/ml/model:ro", *extra, *options, image, *command],
        check=True, capture_output=True,
    )  # fmt: skip
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return name, port, time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() - started > 300:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            stop(name)
            raise SystemExit(f"{image} did not answer /ping within 300 s:\n{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.02)


def stop(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def drive(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients posting JPEGs back to back for ``seconds``; throughput and latency percentiles."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        n = offset
        while time.perf_counter() < deadline:
            body = bodies[n % len(bodies)]
            n += concurrency
            sent = time.perf_counter()
            connection.request("POST", "/invocations", body=body, headers={"Content-Type": "image/jpeg", "Accept": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
                return
            latencies.append(time.perf_counter() - sent)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(ordered),
        "images_per_sec": round(len(ordered) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def measure(label: str, image: str, model: Path, env: dict, command: list[str], bodies: list[bytes], levels: list[int], seconds: float, extra=()) -> dict:
    name, port, cold = start(image, model, env, command, extra)
    try:
        drive(port, bodies, 4, 3)  # warm-up: first batches of each size, connection set-up
        points = []
        for level in levels:
            points.append(drive(port, bodies, level, seconds))
            print(f"{label}: {points[-1]}", flush=True)
    finally:
        stop(name)
    return {"name": label, "image": image, "env": env, "cold_start_seconds": round(cold, 2), "points": points}


def take_turns(servers: dict[str, tuple[str, Path, dict]], bodies: list[bytes], concurrency: int, seconds: float, rounds: int) -> list[dict]:
    """Each server (label: (image, model folder, env)) started, warmed up and driven at ``concurrency`` in turn,
    ``rounds`` times; per label: images/s over the rounds, and the p50/p99 of its median round."""
    points: dict[str, list[dict]] = {label: [] for label in servers}
    for _ in range(rounds):
        for label, (image, folder, env) in servers.items():
            name, port, _ = start(image, folder, env, ["serve"])
            try:
                drive(port, bodies, 4, 3)  # warm-up
                points[label].append(drive(port, bodies, concurrency, seconds))
                print(f"{label}: {points[label][-1]}", flush=True)
            finally:
                stop(name)
    runs = []
    for label, rows in points.items():
        middle = sorted(rows, key=lambda p: p["images_per_sec"])[(len(rows) - 1) // 2]
        runs.append({"label": label, "image": servers[label][0], "images_per_sec": summary([p["images_per_sec"] for p in rows]), "p50_ms": middle["p50_ms"], "p99_ms": middle["p99_ms"]})
    return runs


def median_points(rounds: list[dict]) -> dict:
    """One run per server: each point the round with the median images/s (all rounds kept under ``rounds``)."""
    points = []
    for i in range(len(rounds[0]["points"])):
        candidates = sorted((r["points"][i] for r in rounds), key=lambda p: p["images_per_sec"])
        points.append(candidates[(len(candidates) - 1) // 2])
    return {**rounds[0], "points": points, "rounds": [r["points"] for r in rounds]}


def image_size_mb(image: str) -> int:
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout)[0]
    return round(inspect["Size"] / 1e6)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="byoc-vision-serve:bench", help="our serving image (default flavour)")
    parser.add_argument("--torch-image", default="byoc-vision-serve:bench-torch", help="the torch flavour, which runs the baseline stack")
    parser.add_argument("--seconds", type=float, default=15, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="the servers take turns this many times; each point reports the median round")
    parser.add_argument("--jpeg-size", type=int, default=384, help="side of the JPEG bodies in px")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="client concurrency levels")
    args = parser.parse_args(argv)
    bodies = [body for body, _ in jpeg_photos(64, args.jpeg_size)]
    levels = args.levels
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp))
        colds = []
        for _ in range(3):
            name, _port, cold = start(args.image, model, {}, ["serve"])
            stop(name)
            colds.append(cold)
        servers = [
            ("ours: OpenVINO bf16 (default)", args.image, {}, ["serve"], ()),
            ("ours: OpenVINO fp32", args.image, {"SERVE_PRECISION": "fp32"}, ["serve"], ()),
            ("ours: ONNX Runtime fp32", args.image, {"SERVE_RUNTIME": "onnxruntime"}, ["serve"], ()),
            (
                "AWS default: sagemaker-inference + MMS, torch eager fp32", args.torch_image,
                {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "PYTHONPATH": "/opt/bench"}, ["python", "-c", BASELINE_COMMAND],
                ("-v", f"{REPO / 'bench'}:/opt/bench/bench:ro"),
            ),
        ]  # fmt: skip
        rounds = [[measure(label, image, model, env, command, bodies, levels, args.seconds, extra) for label, image, env, command, extra in servers] for _ in range(args.rounds)]
        runs = [median_points([r[i] for r in rounds]) for i in range(len(servers))]
    ours, baseline = runs[0]["points"], runs[-1]["points"]
    report = {
        "machine": describe(),
        "model": "resnet50 (224 px crop of a 256 px resize), 10 classes",
        "jpeg": {"count": len(bodies), "side_px": args.jpeg_size, "mean_bytes": round(statistics.mean(map(len, bodies)))},
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "runs": runs,
        "image_size_mb": {"default": image_size_mb(args.image), "torch": image_size_mb(args.torch_image), "base python:3.11-slim": image_size_mb("python:3.11-slim")},
        "cold_start_seconds": sorted(round(c, 2) for c in colds),
        "speedup_vs_baseline_at_top": round(ours[-1]["images_per_sec"] / baseline[0]["images_per_sec"], 1),
    }
    save("serve_http.json", report)
    print(f"ours at concurrency {levels[-1]}: {ours[-1]['images_per_sec']} images/s = {report['speedup_vs_baseline_at_top']}x the baseline's one-at-a-time rate")
    return report


if __name__ == "__main__":
    main()
