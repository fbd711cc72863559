"""Human-readable evaluation outputs: per-class report and confusion-matrix picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from train.metrics import confusion_matrix, per_class


def write_class_report(path: Path, classes: list[str], predicted: np.ndarray, target: np.ndarray) -> dict:
    """``<path>.json`` and ``<path>.txt``: precision, recall, F1 and support per class."""
    matrix = confusion_matrix(predicted, target, len(classes))
    stats = per_class(matrix)
    rows = {
        name: {
            key: float(stats[key][i]) if key != "support" else int(stats[key][i])
            for key in ("precision", "recall", "f1", "support")
        }
        for i, name in enumerate(classes)
    }
    path.with_suffix(".json").write_text(json.dumps({"classes": rows, "confusion_matrix": matrix.tolist()}, indent=2))
    width = max(12, *(len(c) for c in classes))
    lines = [f"{'class':<{width}} precision recall     f1  support"]
    lines += [
        f"{name:<{width}} {r['precision']:9.4f} {r['recall']:6.4f} {r['f1']:6.4f} {r['support']:8d}"
        for name, r in rows.items()
    ]
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return rows


def draw_confusion_matrix(
    path: Path, classes: list[str], predicted: np.ndarray, target: np.ndarray, title: str
) -> None:
    """A PNG heat map of the row-normalised confusion matrix, with counts where cells are large enough."""
    matrix = confusion_matrix(predicted, target, len(classes))
    n = len(classes)
    cell = max(4, min(48, 900 // max(n, 1)))
    label_width = min(160, 7 * max(len(c) for c in classes) + 10) if cell >= 14 else 0
    top = 30 + (label_width if cell >= 14 else 0)
    size = (label_width + n * cell + 10, top + n * cell + 10)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((5, 5), f"{title} (rows: true, columns: predicted)", fill="black")
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    share = matrix / rows
    for i in range(n):
        if cell >= 14:
            draw.text((5, top + i * cell + cell // 2 - 5), classes[i][:22], fill="black")
            label = Image.new("RGB", (label_width, 12), "white")
            ImageDraw.Draw(label).text((0, 0), classes[i][:22], fill="black")
            image.paste(label.rotate(90, expand=True), (label_width + i * cell + cell // 2 - 6, 28))
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            x0, y0 = label_width + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline=(220, 220, 220))
            if cell >= 24 and matrix[i, j]:
                draw.text(
                    (x0 + 3, y0 + cell // 2 - 5), str(matrix[i, j]), fill="white" if share[i, j] > 0.5 else "black"
                )
    image.save(path)
