"""What the in-job Debugger rules cost: the same training run with the rules on (the default) and off, alternated in
one invocation on real Fashion-MNIST photos.

Training time is the sum of the epochs' ``epoch_seconds`` (the steps, with the hook saving tensors); the rules'
own evaluation at each epoch end is read from rules.json; wall time covers the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe
from bench.report import save
from bench.stats import summary
from bench.train_finetune import REPO, make_dataset


def one_run(rules: bool, data: Path, base: Path, args: argparse.Namespace) -> dict:
    flags = [
        "--model",
        args.model,
        "--pretrained",
        "none",
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        str(args.epochs),
        "--train",
        str(data / "train"),
        "--valid",
        str(data / "valid"),
        "--test",
        str(data / "test"),
        "--debugger-interval",
        str(args.interval),
        "--profiler-interval",
        "0",
    ]
    if not rules:
        flags += ["--debugger-rules", "none"]
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "train", *flags], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"training with rules {'on' if rules else 'off'} failed:\n{result.stderr[-3000:]}")
    history = json.loads((base / "output" / "data" / "metrics.json").read_text())["history"]
    rules_file = base / "output" / "data" / "rules.json"
    evaluation = json.loads(rules_file.read_text())["evaluation_seconds"] if rules else 0.0
    return {"train_seconds": sum(e["epoch_seconds"] for e in history), "rule_seconds": evaluation, "wall_seconds": wall}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs=3, default=(200, 20, 20), metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--interval", type=int, default=10, help="--debugger-interval (the trainer's default)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each, alternated (on, off, on, off, ...)")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", *args.per_class)
        for rep in range(args.reps):
            for state in ("on", "off"):
                run = one_run(state == "on", data, Path(tmp) / f"{state}-{rep}", args)
                runs[state].append(run)
                print(
                    f"rules {state} #{rep + 1}: train {run['train_seconds']:.1f} s, rules {run['rule_seconds']:.1f} "
                    f"s, wall {run['wall_seconds']:.1f} s",
                    flush=True,
                )

    def median(state: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[state])

    report = {
        "machine": describe(),
        "setup": {
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "interval": args.interval,
            "train_images": args.per_class[0] * 10,
            "reps": args.reps,
        },
        "runs": runs,
        "train_seconds": {s: summary([r["train_seconds"] for r in runs[s]]) for s in runs},
        "wall_seconds": {s: summary([r["wall_seconds"] for r in runs[s]]) for s in runs},
        "rule_seconds": summary([r["rule_seconds"] for r in runs["on"]]),
        "train_ratio": round(median("on", "train_seconds") / median("off", "train_seconds"), 3),
        "train_and_rules_ratio": round(
            (median("on", "train_seconds") + median("on", "rule_seconds")) / median("off", "train_seconds"), 3
        ),
        "wall_ratio": round(median("on", "wall_seconds") / median("off", "wall_seconds"), 3),
    }
    save("rules_overhead.json", report)
    print(
        f"rules on vs off: training {report['train_ratio']}x, training + rule evaluation "
        f"{report['train_and_rules_ratio']}x, wall {report['wall_ratio']}x"
    )
    return report


if __name__ == "__main__":
    main()
