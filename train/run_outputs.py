"""The finishing steps of a run on the main process: reports, metrics, the rules' verdicts, the model artifact and
the profiling report, all under the job's output folders."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
from torch import nn

from train.calibration import BINS, Calibration
from train.data import ImageDataset, collate_skipping
from train.debug.plots import reliability_diagram
from train.errors import TrainingError
from train.export import write_artifact
from train.report import draw_confusion_matrix, write_class_report
from train.sources import Splits
from train.transforms import Preprocess, eval_transform

log = logging.getLogger("train")


def write_reports(
    out: Path,
    split: str,
    classes: list[str],
    probabilities: np.ndarray,
    targets: np.ndarray,
    model_name: str,
    final: dict,
    history: list[dict],
    calibration: Calibration,
) -> None:
    """Per-class report, confusion matrix and reliability diagram of the report split, and ``metrics.json`` (final,
    per epoch, and the calibration with its reliability bins)."""
    out.mkdir(parents=True, exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    write_class_report(out / f"{split}_report", classes, predicted, targets)
    draw_confusion_matrix(
        out / f"{split}_confusion_matrix.png", classes, predicted, targets, f"{model_name} on {split}"
    )
    detail = {
        **calibration.to_json(),
        "reliability_before": calibration.before["bins"],
        "reliability_after": calibration.after["bins"],
    }
    reliability_diagram(detail, out / "reliability_diagram.png", f"{model_name} on {split}")
    log.info(
        "calibration: temperature %.3f fitted on valid; %s NLL %.4f -> %.4f, ECE (%d bins) %.4f -> %.4f",
        calibration.temperature,
        split,
        calibration.before["nll"],
        calibration.after["nll"],
        BINS,
        calibration.before["ece"],
        calibration.after["ece"],
    )
    (out / "metrics.json").write_text(json.dumps({"final": final, "history": history, "calibration": detail}, indent=2))


def export(
    model_dir: Path,
    model: nn.Module,
    arch: str,
    splits: Splits,
    preprocess: Preprocess,
    final: dict,
    hyperparameters: dict,
    calibration: Calibration,
) -> None:
    """The serving artifact, with a sample batch of validation images fed as serving feeds them (float input)."""
    valid_images = ImageDataset(splits.valid, eval_transform(preprocess), strict=False, fit=preprocess.fit())
    sample = collate_skipping([valid_images[i] for i in range(min(4, len(valid_images)))])[0]
    data = {
        "layout": splits.layout,
        "train": len(splits.train),
        "valid": len(splits.valid),
        "test": len(splits.test) if splits.test else 0,
        "skipped_images": final["skipped_images"],
    }
    write_artifact(
        model_dir,
        model,
        arch=arch,
        classes=splits.classes,
        preprocess=preprocess,
        sample=sample,
        metrics=final,
        hyperparameters=hyperparameters,
        data=data,
        calibration=calibration.to_json(),
    )
    log.info("artifact written to %s", model_dir)


def quantize(model_dir: Path, splits: Splits, preprocess: Preprocess, mode: str) -> None:
    """The int8 serving model, past its accuracy gate (``train.quantize``); ``auto`` never fails the finished job."""
    if mode == "off":
        return
    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        if mode == "force":
            raise TrainingError(
                "--quantize force needs nncf and openvino: pip install nncf openvino (the training image has them)."
            )
        log.info("no int8 model: nncf and openvino are not installed (--quantize off says you do not want one)")
        return
    from train.quantize import quantize_artifact

    evaluation, name = (splits.test, "test") if splits.test else (splits.valid, "valid")
    try:
        quantize_artifact(model_dir, splits.valid, evaluation, name, preprocess, mode)
    except Exception:
        if mode == "force":
            raise
        log.exception("int8 quantization failed; the fp32 model is saved and serves as before")


def write_profiling_report(out: Path) -> None:
    """Render the profiling report into ``out``; a failure here is logged and does not fail the finished job."""
    from train.debug.html_report import render
    from train.debug.verdicts import table

    try:
        path, verdicts = render(out, {})
    except Exception:  # the model is already saved: report the bug, keep the job's result
        log.exception(
            "the profiling report could not be rendered (the model and metrics are saved); please report this"
        )
        return
    log.info("profiling report: %s\n%s", path, table(verdicts))
