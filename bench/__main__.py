"""python -m bench {all,input,gpu,train,scale,serve,agreement,rules,soak,ceiling,explain,burst,path,report} [args]

``all`` runs every benchmark one after the other, each in its own process (building the images first unless given),
writes each one's raw JSON to bench/results/ and regenerates docs/benchmarks.md with its plots; ``--smoke`` runs the
same code on tiny inputs (the test suite's check that the suite works; its numbers mean nothing). With $BENCH_OUT set,
results and the document go there instead."""

from __future__ import annotations

import argparse
import faulthandler
import os
import subprocess
import sys
import tempfile
import time

from bench import (
    bf16_agreement,
    explain_cost,
    http_ceiling,
    input_pipeline,
    memory_burst,
    report,
    rules_overhead,
    serve_http,
    serve_path,
    soak,
    train_finetune,
    train_gpu,
    train_scale,
)

COMMANDS = {  # `all` runs them in this order: the training benchmarks (child processes) before the serving ones
    "input": input_pipeline.main,
    "gpu": train_gpu.main,
    "train": train_finetune.main,
    "scale": train_scale.main,
    "rules": rules_overhead.main,
    "serve": serve_http.main,
    "agreement": bf16_agreement.main,
    "soak": soak.main,
    "ceiling": http_ceiling.main,
    "explain": explain_cost.main,
    "burst": memory_burst.main,
}

SMOKE = {
    "input": [
        "--images",
        "48",
        "--side",
        "96",
        "--crop",
        "32",
        "--batch",
        "16",
        "--reps",
        "1",
        "--epochs",
        "2",
        "--pillow-simd",
        "no",
    ],
    "gpu": [
        "--allow-cpu",
        "--model",
        "resnet18",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--reps",
        "1",
        "--photos",
        "16",
        "--side",
        "48",
        "--no-compile",
    ],
    "train": ["--per-class", "3", "2", "2", "--image-size", "32", "--epochs", "1", "--head-epochs", "2"],
    "serve": [
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--levels",
        "1",
        "2",
        "--alone-seconds",
        "0.5",
        "--jpeg-size",
        "64",
        "--peers",
        "none",
    ],
    "agreement": [
        "--photos",
        "32",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--per-class",
        "4",
        "--margins",
        "0.0",
        "0.1",
        "--large-photos",
        "4",
    ],
    "scale": ["--sizes", "200", "400", "--side", "32", "--batch-size", "16"],
    "rules": ["--per-class", "4", "2", "2", "--image-size", "32", "--epochs", "1", "--reps", "1"],
    "soak": ["--seconds", "6", "--good-clients", "2", "--bad-clients", "1"],
    "ceiling": ["--seconds", "1", "--rounds", "1", "--jpeg-size", "64"],
    "explain": ["--seconds", "1", "--rounds", "1", "--jpeg-size", "64"],
    "burst": [
        "--clients",
        "2",
        "--seconds",
        "1",
        "--settle",
        "1",
        "--min-bytes",
        "100000",
        "--variants",
        "malloc_trim when idle",
    ],
}


def run_all(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny inputs: checks that every benchmark runs")
    parser.add_argument(
        "--serve-image", default=None, help="our serving image (default: build byoc-vision-serve:bench)"
    )
    parser.add_argument(
        "--torch-serve-image",
        default=None,
        help="its torch flavour (default: build byoc-vision-serve:bench-torch; torch wheels from $TORCH_INDEX_URL "
        "when set)",
    )
    parser.add_argument(
        "--train-image",
        default=None,
        help="the training image timed by `bench train` (default: build byoc-vision-train:bench)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(COMMANDS), default=list(COMMANDS), help="run these benchmarks only"
    )
    args = parser.parse_args(argv)
    from sagemaker_launch import images

    torch_index = (
        {"TORCH_INDEX_URL": os.environ["TORCH_INDEX_URL"]} if os.environ.get("TORCH_INDEX_URL") else {}
    )  # as the tests do
    if {"serve", "soak", "ceiling", "explain", "burst"} & set(args.only):
        args.serve_image = args.serve_image or images.build("serve", "bench", report.REPO)
        args.torch_serve_image = args.torch_serve_image or images.build(
            "serve", "bench-torch", report.REPO, build_args={"FLAVOUR": "torch", **torch_index}
        )
    if "train" in args.only:
        args.train_image = args.train_image or images.build("train", "bench", report.REPO, build_args=torch_index)
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as shared:
        os.chmod(shared, 0o755)  # readable by our containers' service user, so they serve it without a copy
        os.environ[serve_http.SHARED_ARTIFACTS] = shared  # the serving benchmarks train each ResNet-50 artifact once
        for name in args.only:
            run_one(name, args)
    print(f"wrote {report.write_markdown()}")


def run_one(name: str, args: argparse.Namespace) -> None:
    """Benchmark ``name`` in a process of its own, with ``bench all``'s images and, for ``--smoke``, tiny inputs."""
    extra = SMOKE[name] if args.smoke else []
    if name == "serve":
        extra = [*extra, "--image", args.serve_image, "--torch-image", args.torch_serve_image]
    if name in ("soak", "ceiling", "explain", "burst"):
        extra = [*extra, "--image", args.serve_image]
    if name == "train":
        extra = [*extra, "--docker", args.train_image]
    started = time.perf_counter()
    print(f"== bench {name} {' '.join(extra)}", flush=True)
    # each in a process of its own: no benchmark's threads, loaded libraries or memory reach the next one's numbers
    done = subprocess.run([sys.executable, "-m", "bench", name, *extra], cwd=report.REPO)
    if done.returncode != 0:
        raise SystemExit(f"bench {name} failed with exit code {done.returncode}")
    print(f"== bench {name}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    faulthandler.enable()  # a crash in a native library (torch, OpenVINO) leaves its Python stack on stderr
    if len(sys.argv) < 2 or sys.argv[1] not in (*COMMANDS, "all", "report", "path"):
        raise SystemExit(f"usage: python -m bench {{all,{','.join(COMMANDS)},path,report}} [args]")
    if sys.argv[1] == "all":
        run_all(sys.argv[2:])
    elif sys.argv[1] == "report":
        print(report.write_markdown())
    elif sys.argv[1] == "path":  # a comparison against another commit: not part of `all`
        serve_path.main(sys.argv[2:])
    else:
        COMMANDS[sys.argv[1]](sys.argv[2:])
