"""INT8 serving models with an accuracy gate: NNCF post-training quantization of the artifact's ``model.onnx``
(read by OpenVINO), calibrated on up to 300 ``valid`` images with the eval transform, written next to it as
OpenVINO IR (``model_int8.xml`` + ``.bin``) and kept only when, on the ``test`` split (``valid`` without one), what
the server would answer with it agrees with fp32's top-1 on >= 99 % of the images and is at most 0.5 points less
accurate. The server answers with int8 plus its near-tie re-check (``byoc_contract.recheck``: images whose top two
calibrated probabilities are closer than the margin run again in fp32), so that is what the gate measures; the
agreement of int8 alone is recorded next to it. Quantization tries leaving the first convolution (the stem), then the
first three out of int8 (the classifier always); they run as the server runs them (``byoc_openvino``: bf16 where
the CPU has it, else fp32). The faster model ships at once when its agreement is surely past the gate
(the 95 % lower bound on the test images, so a small test split cannot wave it through); else the closer one is
measured and ships when it passes.

The result (agreement, both accuracies, shipped or why not) goes into ``model.json`` under ``int8``.
``python -m train.quantize MODEL_DIR --data DIR`` does the same for an artifact trained earlier.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import byoc_openvino
from byoc_contract import model_json, recheck
from byoc_contract.messages import one_line
from byoc_machine import usable_cores
from train.calibration import scaled_softmax
from train.data import ImageDataset, collate_skipping
from train.errors import TrainingError
from train.sources import Split, load_splits
from train.transforms import Preprocess, eval_transform

log = logging.getLogger("train")
INT8_FILE = "model_int8.xml"
MODES = ("auto", "off", "force")
CALIBRATION_IMAGES = 300
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.005
FP32_CONVOLUTIONS = (
    1,
    3,
)  # tried in turn, the stem alone out of int8 (ResNet-50: 1.83x bf16), then the first three (1.78x)


def batches(
    split: Split, preprocess: Preprocess, limit: int, size: int = 32
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float32 NCHW images, labels) of the first ``limit`` readable images of ``split``, with the eval transform."""
    dataset = ImageDataset(split, eval_transform(preprocess), strict=False, fit=preprocess.fit())
    count = min(len(dataset), limit)
    for start in range(0, count, size):
        images, labels, _ = collate_skipping([dataset[i] for i in range(start, min(start + size, count))])
        if len(images):
            yield images.numpy(), labels.numpy()


def compiled(core, model, precision: str = "fp32") -> tuple[object, str]:
    """An infer request of ``model`` (a file or an ``ov.Model``) for the CPU with its unquantized layers in
    ``precision`` (the quantized ones run in int8 whatever the hint), and the precision OpenVINO granted."""
    source = str(model) if isinstance(model, Path) else model
    return byoc_openvino.openvino_request(core, source, precision, "THROUGHPUT", usable_cores())


def top1(
    request, split: Split, preprocess: Preprocess, limit: int, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A compiled model's top-1 labels on the first ``limit`` readable images of ``split``, which of them the server
    would re-check (:func:`byoc_contract.recheck.near_ties` of the calibrated probabilities at the default margin),
    and the true labels."""
    tops, ties, truth = [], [], []
    for images, labels in batches(split, preprocess, limit):
        logits = request.infer({0: images})[0]
        tops.append(logits.argmax(axis=1))
        ties.append(recheck.near_ties(scaled_softmax(logits, temperature), recheck.DEFAULT_MARGIN))
        truth.append(labels)
    if not truth:
        raise TrainingError("no readable image to measure the int8 model on")
    top, near, labels = (np.concatenate(parts) for parts in (tops, ties, truth))
    return top, near, labels


def compare(reference: tuple, quantized: tuple) -> dict:
    """Top-1 agreement with fp32 and accuracy of int8 as served (its near ties re-checked in fp32) and alone, and
    fp32's accuracy; ``reference`` and ``quantized`` are :func:`top1` results on the same images."""
    (top32, _, labels), (top8, rechecked, _) = reference, quantized
    served = np.where(rechecked, top32, top8)
    share = lambda hits: round(float(hits.mean()), 4)  # noqa: E731
    return {
        "images": len(labels),
        "agreement": share(served == top32),
        "accuracy_fp32": share(top32 == labels),
        "accuracy_int8": share(served == labels),
        "recheck_margin": recheck.DEFAULT_MARGIN,
        "rechecked": share(rechecked),
        "agreement_int8_alone": share(top8 == top32),
        "accuracy_int8_alone": share(top8 == labels),
    }


def verdict(measured: dict) -> tuple[bool, str]:
    """Whether the int8 model passes the gate, and why (not)."""
    drop = measured["accuracy_fp32"] - measured["accuracy_int8"]
    if measured["agreement"] < MIN_AGREEMENT:
        return (
            False,
            f"top-1 agreement with fp32 {measured['agreement']:.2%} (near ties re-checked at margin "
            f"{measured['recheck_margin']}) is below {MIN_AGREEMENT:.0%}",
        )
    if drop > MAX_ACCURACY_DROP:
        return (
            False,
            f"accuracy drops by {100 * drop:.2f} points ({measured['accuracy_fp32']:.4f} -> "
            f"{measured['accuracy_int8']:.4f}), more than {100 * MAX_ACCURACY_DROP:.1f}",
        )
    return True, (
        f"agreement {measured['agreement']:.2%} ({measured['agreement_int8_alone']:.2%} before re-checking the "
        f"{measured['rechecked']:.1%} near ties),"
        f" accuracy {measured['accuracy_fp32']:.4f} -> {measured['accuracy_int8']:.4f}"
    )


def lower_bound(share: float, count: int, z: float = 1.96) -> float:
    """The Wilson score interval's lower end for a share measured on ``count`` images (95 % by default)."""
    centre = share + z * z / (2 * count)
    spread = z * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return float((centre - spread) / (1 + z * z / count))


def surely(measured: dict) -> bool:
    """Whether a model passes :func:`verdict` even at the 95 % lower bound of its agreement (a faster model that a
    closer one can replace must; 100 of 100 agreeing images do not show 99 %)."""
    return verdict(measured)[0] and lower_bound(measured["agreement"], measured["images"]) >= MIN_AGREEMENT


def quantization_options(model, fp32_convolutions: int) -> dict:
    """NNCF's settings: the first ``fp32_convolutions`` convolutions and the classifier (its MatMul) stay fp32, where
    8 bits cost the most agreement; no overflow fix, which gives weights 7 bits for CPUs without VNNI, and the server
    picks int8 only on CPUs with VNNI or AMX (both measured: docs/benchmarks.md)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    operations = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
    convolutions = [name for name, kind in operations if kind in ("Convolution", "GroupConvolution")]
    classifiers = [name for name, kind in operations if kind == "MatMul"]
    return {
        "ignored_scope": nncf.IgnoredScope(names=convolutions[:fp32_convolutions] + classifiers),
        "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE),
    }


def quantize_artifact(
    model_dir: Path,
    calibration: Split,
    evaluation: Split,
    split_name: str,
    preprocess: Preprocess,
    mode: str,
    limit: int = 5000,
) -> dict:
    """Quantize, measure on ``evaluation`` (at most ``limit`` images) and keep the int8 model past the gate
    (:func:`choose`); with ``mode="force"`` and none passing, the fastest tried.
    model.json records the outcome and every attempt. Returns that record."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its INFO records span lines each; ours below says what stayed out of int8
    started, core = time.perf_counter(), ov.Core()
    samples = [image[None] for images, _ in batches(calibration, preprocess, CALIBRATION_IMAGES) for image in images]
    if not samples:
        raise TrainingError("no readable valid image to calibrate the int8 model with")
    temperature = float(model_json.read(model_dir).section("calibration").get("temperature", 1.0))
    fp32_model = readable(core, model_dir / "model.onnx")
    reference = top1(compiled(core, fp32_model)[0], evaluation, preprocess, limit, temperature)
    attempts = []
    for fp32_convolutions in FP32_CONVOLUTIONS:
        model = fp32_model.clone()
        quantized = nncf.quantize(
            model, nncf.Dataset(samples), subset_size=len(samples), **quantization_options(model, fp32_convolutions)
        )
        ov.save_model(quantized, str(attempt_file(model_dir, fp32_convolutions)), compress_to_fp16=False)
        request, unquantized = compiled(
            core, attempt_file(model_dir, fp32_convolutions), byoc_openvino.UNQUANTIZED_PRECISION
        )
        measured = {
            "fp32_convolutions": fp32_convolutions,
            "unquantized_precision": unquantized,
            **compare(reference, top1(request, evaluation, preprocess, limit, temperature)),
        }
        (passed, reason), sure, last = verdict(measured), surely(measured), fp32_convolutions == FP32_CONVOLUTIONS[-1]
        attempts.append({**measured, "passed": passed, "surely_passed": sure, "reason": reason})
        doubt = (
            ""
            if sure or not passed or last
            else f" (not surely, on {measured['images']} images: trying one closer to fp32)"
        )
        log.info(
            "int8 with the first %d convolutions in fp32: %s%s",
            fp32_convolutions,
            reason if passed else f"failed the gate, {reason}",
            doubt,
        )
        if sure and not last:
            break  # past the gate beyond doubt: no need for a model closer to fp32
    passing = choose(attempts)
    chosen = passing or (attempts[0] if mode == "force" else None)
    keep(model_dir, chosen["fp32_convolutions"] if chosen else None)
    shown = {
        **(chosen or attempts[-1]),
        "reason": (passing or attempts[-1])["reason"],
    }  # why it passed, or why the last failed
    record = {
        "file": INT8_FILE if chosen else None,
        "format": "openvino-ir",
        "shipped": chosen is not None,
        "passed_gate": passing is not None,
        "split": split_name,
        **{k: v for k, v in shown.items() if k not in ("passed", "surely_passed")},
        "calibration_images": len(samples),
        "seconds": round(time.perf_counter() - started, 1),
        "gate": {"min_agreement": MIN_AGREEMENT, "max_accuracy_drop": MAX_ACCURACY_DROP},
        "attempts": attempts,
    }
    model_json.update(model_dir, int8=record)
    if chosen:
        log.info(
            "int8 model %s shipped%s: %s",
            INT8_FILE,
            "" if passing else " (--quantize force, though it failed the gate; the fastest tried)",
            shown["reason"],
        )
        if chosen["rechecked"] > recheck.SLOW_SHARE:
            log.warning(
                "the int8 model re-runs %.1f%% of the images in fp32 (near ties of an unsure model): it may serve "
                "slower than bf16;"
                " compare with SERVE_PRECISION=bf16",
                100 * chosen["rechecked"],
            )
    else:
        log.warning(
            "no int8 model shipped: %s (the gate: >= %.0f%% agreement, <= %.1f points accuracy drop)",
            shown["reason"],
            100 * MIN_AGREEMENT,
            100 * MAX_ACCURACY_DROP,
        )
    return record


def readable(core, path: Path):
    """The model at ``path`` as OpenVINO reads it; a TrainingError saying what to do when it cannot."""
    try:
        return byoc_openvino.read_model(core, path)
    except Exception as exc:
        raise TrainingError(
            f"{path} is not a model OpenVINO can read ({one_line(exc, 300)}): it is corrupt, truncated or not ONNX; "
            "export the artifact again with python -m train"
        ) from None


def choose(attempts: list[dict]) -> dict | None:
    """The attempt past the gate: a faster one surely past it, else the closest to fp32 when it passed; else None (a
    faster one that passed by a hair while the closer one failed is likely below the gate)."""
    candidates = [a for a in attempts[:-1] if a["surely_passed"]] + [a for a in attempts[-1:] if a["passed"]]
    return candidates[0] if candidates else None


def attempt_file(model_dir: Path, fp32_convolutions: int) -> Path:
    """Where the int8 model with the first ``fp32_convolutions`` convolutions in fp32 waits for the gate's verdict."""
    return model_dir / f"model_int8_fp32conv{fp32_convolutions}.xml"


def keep(model_dir: Path, fp32_convolutions: int | None) -> None:
    """Move the chosen attempt (OpenVINO IR: .xml and .bin) to INT8_FILE and delete the others; None deletes them
    all."""
    final = model_dir / INT8_FILE
    for path in (final, final.with_suffix(".bin")):
        path.unlink(missing_ok=True)
    for tried in FP32_CONVOLUTIONS:
        source = attempt_file(model_dir, tried)
        for suffix in (".xml", ".bin"):
            if tried == fp32_convolutions and source.with_suffix(suffix).exists():
                source.with_suffix(suffix).replace(final.with_suffix(suffix))
            else:
                source.with_suffix(suffix).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.quantize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="the artifact folder (model.json + model.onnx)")
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the training data: valid/ (calibration) and test/ (measurement) class folders, or a train channel they "
        "are split from",
    )
    parser.add_argument(
        "--force", action="store_true", help="ship an int8 model even when none passes the gate (the fastest tried)"
    )
    parser.add_argument("--max-images", type=int, default=5000, help="measure on at most this many test images")
    parser.add_argument(
        "--seed", type=int, default=0, help="the seed of the training run, when valid/test were split from train"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        described = model_json.read(args.model_dir / model_json.FILE)
        preprocess, classes = Preprocess(**dataclasses.asdict(described.preprocess)), list(described.classes)
        if not (args.model_dir / "model.onnx").is_file():
            raise TrainingError(
                f"{args.model_dir} has no model.onnx: give the folder training wrote (model.json + model.onnx)"
            )
        splits = load_splits(args.data, args.data / "valid", args.data / "test", 0.1, 0.1, args.seed)
        if splits.classes != classes:
            raise TrainingError(
                f"{args.data} has classes {splits.classes[:5]}..., the model {classes[:5]}...: give the data it was "
                "trained on"
            )
        evaluation, name = (splits.test, "test") if splits.test else (splits.valid, "valid")
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is for the record alone
            record = quantize_artifact(
                args.model_dir,
                splits.valid,
                evaluation,
                name,
                preprocess,
                "force" if args.force else "auto",
                args.max_images,
            )
    except (OSError, KeyError, ValueError, TrainingError) as exc:
        print(f"python -m train.quantize: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
