"""End-to-end HTTP serving of a ResNet-50 artifact: our serving image against the servers a user would pick instead.

One invocation, one machine, one after the other: the ResNet-50 artifact is trained here (``python -m train``,
head only on the demo photos, ``--quantize force`` so that it carries the int8 model; the backbone weights are
random because ImageNet downloads are unreachable, which changes no timing). Then each server runs in its container
with the artifact mounted and is driven with JPEG bodies at concurrency 1, 4, 16 and 64 (keep-alive connections, one
request per connection at a time, a warm-up at each level first):

- ours at int8 (``SERVE_PRECISION=auto``), bf16 and fp32, as they ship (near ties re-checked in fp32); and int8 and
  bf16 with the re-check off, since the random backbone makes far more near ties than a fine-tuned model does (the
  share of the bodies that are near ties is measured and reported);
- TorchServe 0.12 and Ray Serve 2.60 (bench/peers/), each at its documented default (torch eager fp32, its batching
  on) and at the best CPU setting its docs offer, picked by timing every mode first (``bench.peers.backends``);
- the sagemaker-inference + MMS stack of AWS's PyTorch containers before 2.6 (the historical baseline).

Also measured: each image's size, each server's cold start (``docker run`` -> its first prediction), and ours
without HTTP (``bench.inference_alone``: the runtime's own images/s, the ceiling of the HTTP rows).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.machine import describe
from bench.photos import REPO, jpeg_photos, photos_choice
from bench.report import save
from bench.stats import summary
from byoc_contract import model_json

INT8, BF16, FP32 = "ours: OpenVINO int8 (auto)", "ours: OpenVINO bf16", "ours: OpenVINO fp32"
UNCHECKED = (
    ", near-tie re-check off"  # the random backbone makes more near ties than a fine-tuned model: both are reported
)
SHARED_ARTIFACTS = "BENCH_ARTIFACTS"  # a folder `bench all` sets for the run: one artifact per set of trainer flags
BASELINE_COMMAND = (
    "from sagemaker_inference import model_server; "
    'model_server.start_model_server(handler_service="bench.baseline_service:handle")'
)


def near_tie_share(model: Path, bodies: list[bytes]) -> float:
    """The share of ``bodies`` that ours in bf16 or int8 would run again in fp32 at the default margin (fp32
    probabilities)."""
    import io

    from PIL import Image

    from byoc_contract import recheck
    from serve.artifact import load_spec
    from serve.preprocess import to_input
    from serve.runtime import load_runtime

    spec = load_spec(model)
    batch = np.stack([to_input(Image.open(io.BytesIO(body)).convert("RGB"), spec) for body in bodies])
    return round(
        float(recheck.near_ties(load_runtime(spec, "onnxruntime", 2).predict(batch), recheck.DEFAULT_MARGIN).mean()), 3
    )


def make_artifact(work: Path, extra: tuple[str, ...] = ()) -> Path:
    """A ResNet-50 artifact from our trainer (model.onnx, model.json, weights.safetensors; ``extra`` flags added),
    trained under ``work``; or, when ``bench all`` set $BENCH_ARTIFACTS, the one trained there with the same flags by an
    earlier benchmark of the run (the benchmarks copy a model folder before changing it, never change it in place)."""
    if os.environ.get(SHARED_ARTIFACTS):
        work = Path(os.environ[SHARED_ARTIFACTS]) / ("_".join(flag.strip("-") for flag in extra) or "default")
        if (work / "done").is_file():
            print(
                f"the ResNet-50 artifact trained with {' '.join(extra) or 'no extra flags'} earlier in this run "
                "is reused",
                flush=True,
            )
            return work / "opt_ml" / "model"
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(work / "opt_ml")}
    args = [
        "--model",
        "resnet50",
        "--pretrained",
        "none",
        "--finetune",
        "head",
        "--augment",
        "none",
        "--epochs",
        "1",
        "--train",
        str(REPO / "demo" / "data" / "valid"),
        *extra,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "train", *args, "--workers", "2"], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"training the ResNet-50 artifact failed:\n{result.stderr[-3000:]}")
    model = work / "opt_ml" / "model"
    # The backbone is random, so the temperature fitted on valid is the search's bound (20): every image would be a
    # near tie that bf16 and int8 run again in fp32. Without it, a few are (`near_tie_share`, reported).
    described = model_json.read(model)
    model_json.write(model, {k: v for k, v in described.sections.items() if k != "calibration"})
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    (work / "done").touch()
    return model


def ensure_image(image: str) -> None:
    """Build ``image`` when this machine lacks it and it is one of the benchmarks' own (our serving image and its torch
    flavour, the peers); any other missing image stops the benchmark with what to run. A benchmark run on its own
    on a fresh machine thus builds what it needs, as ``bench all`` does first."""
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        return
    from sagemaker_launch import images

    torch_index = {"TORCH_INDEX_URL": os.environ["TORCH_INDEX_URL"]} if os.environ.get("TORCH_INDEX_URL") else {}
    print(f"{image} is not on this machine: building it", flush=True)
    if image == "byoc-vision-serve:bench":
        images.build("serve", "bench", REPO)
    elif image == "byoc-vision-serve:bench-torch":
        images.build("serve", "bench-torch", REPO, build_args={"FLAVOUR": "torch", **torch_index})
    elif image.startswith("byoc-vision-peer:"):
        build_peer(image.split(":", 1)[1])
    else:
        raise SystemExit(
            f"{image} is not on this machine: build it (python -m sagemaker_launch build ...) or leave --image at "
            "its default"
        )


def start(
    image: str,
    model: Path,
    env: dict[str, str],
    command: list[str],
    extra: tuple[str, ...] = (),
    probe: tuple[str, bytes] | None = None,
) -> tuple[str, int, float]:
    """Run ``image`` detached with the model mounted; returns (name, port, seconds until it is ready): the first 200
    on ``/ping``, or with ``probe`` (path, JPEG body) the first 200 to that body posted to that path."""
    ensure_image(image)
    name, port = f"byoc-bench-{uuid.uuid4().hex[:8]}", 18000 + int(uuid.uuid4().int % 2000)
    options = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    started = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{model}:/opt/ml/model:ro",
            *extra,
            *options,
            image,
            *command,
        ],
        check=True,
        capture_output=True,
    )
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if probe:
                connection.request(
                    "POST",
                    probe[0],
                    body=probe[1],
                    headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
                )
            else:
                connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return name, port, time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() - started > 600:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            stop(name)
            raise SystemExit(f"{image} was not ready within 600 s:\n{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.05)


def stop(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def drive(port: int, bodies: list[bytes], concurrency: int, seconds: float, path: str = "/invocations") -> dict:
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
            connection.request(
                "POST", path, body=body, headers={"Content-Type": "image/jpeg", "Accept": "application/json"}
            )
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


@dataclass(frozen=True)
class Server:
    """One server of the comparison: its image, environment, command, invocation path and extra ``docker run``
    options."""

    label: str
    image: str
    env: dict = field(default_factory=dict)
    command: tuple[str, ...] = ("serve",)
    path: str = "/invocations"
    extra: tuple[str, ...] = ()


def measure(
    server: Server,
    model: Path,
    bodies: list[bytes],
    levels: list[int],
    seconds: float,
    scrape: Callable[[int], dict] | None = None,
) -> dict:
    """Start ``server`` (cold start: until its first prediction), then at each level a short warm-up and a measurement;
    with ``scrape``, what it reads from the running server (its port) at the end goes under ``server_side``."""
    name, port, cold = start(
        server.image, model, server.env, list(server.command), server.extra, probe=(server.path, bodies[0])
    )
    try:
        points = []
        for level in levels:
            drive(
                port, bodies, level, 3, server.path
            )  # warm-up: this level's batch sizes (and a compiling peer's shapes)
            points.append(drive(port, bodies, level, seconds, server.path))
            print(f"{server.label}: {points[-1]}", flush=True)
        seen = {"server_side": scrape(port)} if scrape else {}
    finally:
        stop(name)
    return {
        "name": server.label,
        "image": server.image,
        "env": server.env,
        "cold_start_seconds": round(cold, 2),
        "points": points,
        **seen,
    }


def take_turns(
    servers: dict[str, tuple], bodies: list[bytes], concurrency: int, seconds: float, rounds: int
) -> list[dict]:
    """Each server (label: (image, model folder, env[, invocation path])) started, warmed up and driven at
    ``concurrency`` in turn, ``rounds`` times; per label: images/s over the rounds, and the p50/p99 of its median
    round."""
    points: dict[str, list[dict]] = {label: [] for label in servers}
    for _ in range(rounds):
        for label, (image, folder, env, *path) in servers.items():
            name, port, _ = start(image, folder, env, ["serve"])
            try:
                drive(port, bodies, 4, 3, *path)  # warm-up
                points[label].append(drive(port, bodies, concurrency, seconds, *path))
                print(f"{label}: {points[label][-1]}", flush=True)
            finally:
                stop(name)
    runs = []
    for label, rows in points.items():
        middle = lower_median(rows, key=lambda p: p["images_per_sec"])
        runs.append(
            {
                "label": label,
                "image": servers[label][0],
                "images_per_sec": summary([p["images_per_sec"] for p in rows]),
                "p50_ms": middle["p50_ms"],
                "p99_ms": middle["p99_ms"],
            }
        )
    return runs


def turns_parser(prog: str, doc: str, rounds: int = 3) -> argparse.ArgumentParser:
    """The options of a benchmark whose servers take turns (``take_turns``) on our serving image."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="byoc-vision-serve:bench")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument(
        "--alone-seconds", type=float, default=8, help="duration of each measurement of ours without HTTP"
    )
    parser.add_argument("--jpeg-size", type=int, default=384)
    return parser


def lower_median(items: list, key: Callable | None = None):
    """The middle item by ``key`` (the lower one of an even count: a real measurement, never an average)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def median_points(rounds: list[dict]) -> dict:
    """One run per server: each point the round with the median images/s (all rounds kept under ``rounds``)."""
    points = []
    for i in range(len(rounds[0]["points"])):
        points.append(lower_median([r["points"][i] for r in rounds], key=lambda p: p["images_per_sec"]))
    colds = sorted(r["cold_start_seconds"] for r in rounds)
    return {
        **rounds[0],
        "points": points,
        "rounds": [r["points"] for r in rounds],
        "cold_start_seconds": lower_median(colds),
        "cold_starts": colds,
    }


def image_size_mb(image: str) -> int:
    inspect = json.loads(
        subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    )[0]
    return round(inspect["Size"] / 1e6)


def build_peer(target: str) -> str:
    """Build one target of bench/peers/Dockerfile (its layers cached after the first time); returns the image name."""
    image = f"byoc-vision-peer:{target}"
    index = (
        ["--build-arg", f"TORCH_INDEX_URL={os.environ['TORCH_INDEX_URL']}"] if os.environ.get("TORCH_INDEX_URL") else []
    )
    command = [
        "docker",
        "buildx",
        "build",
        "--load",
        "-f",
        str(REPO / "bench" / "peers" / "Dockerfile"),
        "--target",
        target,
        "-t",
        image,
        *index,
        str(REPO / "bench"),
    ]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"building {image} failed (see the build log above)")
    return image


def run_json(image: str, module: str, what: str, options: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> dict:
    """``python -m module *args`` in a throwaway container of ``image``; returns the JSON object it prints last."""
    ensure_image(image)
    result = subprocess.run(
        ["docker", "run", "--rm", *options, image, "python", "-m", module, *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-3000:]}")
    print(result.stdout, flush=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def pick_best_mode(image: str) -> dict:
    """Run ``bench.peers.backends`` in a peer image: inference-only images/s of each torch mode, and the best."""
    return run_json(image, "bench.peers.backends", "timing the peers' torch modes")


def inference_alone(image: str, model: Path, seconds: float) -> dict:
    """Run ``bench.inference_alone`` in our image on ``model``: the runtime's own images/s per precision and batch."""
    mounts = (
        "-v",
        f"{model}:/opt/ml/model:ro",
        "-v",
        f"{REPO / 'bench'}:/opt/bench/bench:ro",
        "-e",
        "PYTHONPATH=/opt/bench",
    )
    return run_json(
        image, "bench.inference_alone", "timing our runtime alone", mounts, ("/opt/ml/model", "--seconds", str(seconds))
    )


def peer_servers(peer_images: dict[str, str], best_mode: str) -> list[Server]:
    """TorchServe and Ray Serve (bench/peers/) at their documented default and at their best mode; none without
    images."""
    if not peer_images:
        return []
    ts, ray = peer_images["torchserve"], peer_images["rayserve"]
    best = {"PEER_CONFIG": "best", "PEER_MODE": best_mode}
    return [
        Server(
            "TorchServe 0.12 default: eager fp32, 2 workers, batch 8 / 50 ms", ts, command=(), path="/predictions/model"
        ),
        Server(
            f"TorchServe 0.12 best: {best_mode}, 1 worker, batch 8 / 50 ms",
            ts,
            best,
            command=(),
            path="/predictions/model",
        ),
        Server("Ray Serve 2.60 default: eager fp32, @serve.batch()", ray, command=(), extra=("--shm-size", "1g")),
        Server(
            f"Ray Serve 2.60 best: {best_mode}, all cores, batch 16 / 10 ms",
            ray,
            best,
            command=(),
            extra=("--shm-size", "1g"),
        ),
    ]


def servers(args: argparse.Namespace, peer_images: dict[str, str], best_mode: str) -> list[Server]:
    """Ours (int8 picked by SERVE_PRECISION=auto, bf16, fp32), the peers at their default and best, the old AWS
    stack."""
    ours = [
        Server(INT8, args.image),
        Server(BF16, args.image, {"SERVE_PRECISION": "bf16"}),
        Server(FP32, args.image, {"SERVE_PRECISION": "fp32"}),
        Server(f"{INT8}{UNCHECKED}", args.image, {"SERVE_BF16_RECHECK_MARGIN": "0"}),
        Server(f"{BF16}{UNCHECKED}", args.image, {"SERVE_PRECISION": "bf16", "SERVE_BF16_RECHECK_MARGIN": "0"}),
    ]
    peers = peer_servers(peer_images, best_mode)
    baseline = Server(
        "AWS before 2.6: sagemaker-inference + MMS, torch eager fp32",
        args.torch_image,
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "PYTHONPATH": "/opt/bench"},
        ("python", "-c", BASELINE_COMMAND),
        extra=("-v", f"{REPO / 'bench'}:/opt/bench/bench:ro"),
    )
    return [*ours, *peers, baseline]


def at(run: dict, concurrency: int) -> dict:
    return next(p for p in run["points"] if p["concurrency"] == concurrency)


def ratios(runs: list[dict], top: int, suffix: str = "") -> dict:
    """Ours int8 (the rows named ``INT8 + suffix``) at concurrency ``top`` against ours bf16 (likewise) and the best
    peer at its default and at its best."""
    rate = {run["name"]: at(run, top)["images_per_sec"] for run in runs}
    int8 = rate[INT8 + suffix]
    p50 = next(run for run in runs if run["name"] == INT8 + suffix)["points"][0]["p50_ms"]
    out = {"int8_images_per_sec": int8, "int8_vs_bf16": round(int8 / rate[BF16 + suffix], 2), "int8_p50_ms_at_1": p50}
    for kind in ("default", "best"):
        peers = {name: r for name, r in rate.items() if f" {kind}:" in name}
        if peers:
            name = max(peers, key=peers.get)
            out[f"best_peer_{kind}"] = name
            out[f"int8_vs_best_peer_{kind}"] = round(int8 / peers[name], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    if photos_choice(argv) == "large":  # real 3-15 MP photos: bench/serve_large.py
        from bench import serve_large

        return serve_large.main(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--photos",
        choices=("small",),
        default="small",
        help="large: real 3-15 MP photos instead (python -m bench serve --photos large --help)",
    )
    parser.add_argument("--image", default="byoc-vision-serve:bench", help="our serving image (default flavour)")
    parser.add_argument(
        "--torch-image", default="byoc-vision-serve:bench-torch", help="the torch flavour, which runs the old AWS stack"
    )
    parser.add_argument(
        "--peers", choices=("all", "none"), default="all", help="build and run TorchServe and Ray Serve (bench/peers/)"
    )
    parser.add_argument("--seconds", type=float, default=10, help="duration of each measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="the servers take turns this many times; each point reports the median round",
    )
    parser.add_argument(
        "--alone-seconds", type=float, default=8, help="duration of each measurement of ours without HTTP"
    )
    parser.add_argument("--jpeg-size", type=int, default=384, help="side of the JPEG bodies in px")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64], help="client concurrency levels")
    args = parser.parse_args(argv)
    bodies = [body for body, _ in jpeg_photos(64, args.jpeg_size)]
    peer_images = {target: build_peer(target) for target in ("torchserve", "rayserve")} if args.peers == "all" else {}
    modes = pick_best_mode(peer_images["torchserve"]) if peer_images else None
    lineup = servers(args, peer_images, modes["best"] if modes else "eager")
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp), ("--quantize", "force"))
        near_ties = near_tie_share(model, bodies)
        gate = model_json.read(model).section("int8")
        alone = inference_alone(args.image, model, args.alone_seconds)
        rounds = [
            [measure(server, model, bodies, args.levels, args.seconds) for server in lineup] for _ in range(args.rounds)
        ]
        runs = [median_points([r[i] for r in rounds]) for i in range(len(lineup))]
    report = {
        "machine": describe(),
        "model": "resnet50 (224 px crop of a 256 px resize), 10 classes",
        "jpeg": {
            "count": len(bodies),
            "side_px": args.jpeg_size,
            "mean_bytes": round(statistics.mean(map(len, bodies))),
        },
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "peer_modes": modes,
        "ours_inference_alone": {
            **alone,
            "http_rows": {"int8": INT8 + UNCHECKED, "bf16": BF16 + UNCHECKED, "fp32": FP32},
        },
        "runs": runs,
        "image_size_mb": {
            **{s.image: image_size_mb(s.image) for s in lineup},
            "python:3.11-slim": image_size_mb("python:3.11-slim"),
        },
        "near_tie_share": near_ties,
        "int8_model": {
            key: gate[key]
            for key in ("fp32_convolutions", "unquantized_precision", "passed_gate", "reason", "split", "images")
        },
        "targets": ratios(runs, 16 if 16 in args.levels else args.levels[-1]),
        "targets_recheck_off": ratios(runs, 16 if 16 in args.levels else args.levels[-1], UNCHECKED),
    }
    save("serve_http.json", report)
    print(json.dumps(report["targets"], indent=2))
    return report


if __name__ == "__main__":
    main()
