"""The model artifact (the contract with serving): model.onnx, model.json, weights.safetensors, metrics.json."""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from byoc_contract import model_json
from train.cam import FEATURES, HEAD_FILE, explainable, save_head
from train.models import build_network
from train.transforms import Preprocess

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TOLERANCE = (
    1e-4  # relative to the largest logit: fp32 rounding grows with the logits (a head trained long on random features)
)


def framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def plain_copy(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """A float32 CPU network in eval mode with ``model``'s weights and none of the hooks tools attached to it.

    The architecture is built afresh and loaded from the state dict, so smdebug's and the rules' hooks (which would
    break the ONNX export) stay on the training copy.
    """
    plain = build_network(arch, num_classes, "none").model
    plain.load_state_dict({name: value.detach().float().cpu() for name, value in model.state_dict().items()})
    return plain.eval()


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> float:
    """Export ``model`` (a :func:`plain_copy`, or its ``train.cam.TwoOutputs``) with a dynamic batch axis and check
    onnxruntime's logits agree with torch's (within TOLERANCE of the largest logit, at least 1); returns the max abs
    difference."""
    import onnxruntime as ort

    model.eval()  # a wrapper such as TwoOutputs starts in training mode even around an eval-mode network
    sample = sample.float().cpu().contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096)
    onnx_program = torch.onnx.export(
        model,
        (sample,),
        input_names=[INPUT_NAME],
        output_names=list(outputs),
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    onnx_program.save(str(path), external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(sample)
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: sample.numpy()})[0]
    difference, scale = float(np.abs(expected - got).max()), max(1.0, float(np.abs(expected).max()))
    if difference > TOLERANCE * scale:
        raise RuntimeError(
            f"ONNX export of the model differs from torch by {difference:.2e} (> {TOLERANCE} x {scale:.3g}, the "
            "largest logit); report this as a bug"
        )
    log.info(
        "exported %s (%.1f MB); onnxruntime matches torch within %.1e", path.name, path.stat().st_size / 1e6, difference
    )
    return difference


def write_artifact(
    model_dir: Path,
    model: nn.Module,
    *,
    arch: str,
    classes: list[str],
    preprocess: Preprocess,
    sample: torch.Tensor,
    metrics: dict,
    hyperparameters: dict,
    data: dict,
    calibration: dict | None = None,
) -> dict:
    """Write everything serving needs; returns model.json's content."""
    from safetensors.torch import save_model

    model_dir.mkdir(parents=True, exist_ok=True)
    model = plain_copy(model, arch, len(classes))
    sample = sample.float().cpu().contiguous()
    network, head, reason = explainable(model, arch, sample)
    if network is None:
        log.info("no class activation maps for this model: %s", reason)
        difference = export_onnx(model, sample, model_dir / "model.onnx")
        explain = {"available": False, "reason": reason}
    else:
        difference = export_onnx(network, sample, model_dir / "model.onnx", (OUTPUT_NAME, FEATURES))
        save_head(head, model_dir / HEAD_FILE)
        explain = {"available": True, "method": "cam", "output": FEATURES, "head": HEAD_FILE}
    save_model(model, str(model_dir / "weights.safetensors"))
    (model_dir / "weights.safetensors").chmod(0o644)  # safetensors writes 0600; servers may run as another user
    description = {
        "architecture": arch,
        "num_classes": len(classes),
        "classes": classes,
        "preprocess": preprocess.to_json(),
        "onnx": {
            "file": "model.onnx",
            "opset": OPSET,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "output_kind": "logits",
            "max_abs_diff_vs_torch": difference,
        },
        "explain": explain,
        "weights": {
            "file": "weights.safetensors",
            "format": "safetensors",
            "library": "timm" if arch.startswith("timm/") else "torchvision",
        },
        "framework": framework_versions(),
        "metrics": metrics,
        **({"calibration": calibration} if calibration else {}),
        "hyperparameters": hyperparameters,
        "data": data,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    description = dict(model_json.write(model_dir, description).sections)
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return description
