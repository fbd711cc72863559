"""Real Fashion-MNIST photos (Debian package dataset-fashion-mnist) written out as small datasets."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def available() -> bool:
    return (ROOT / "train-images-idx3-ubyte.gz").is_file()


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 28 x 28, labels) of the 'train' (60,000) or 't10k' (10,000) set."""
    with gzip.open(ROOT / f"{split}-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(ROOT / f"{split}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images, labels


def pick(labels: np.ndarray, per_class: int, classes: int, offset: int = 0) -> np.ndarray:
    """Indices of ``per_class`` images of each of the first ``classes`` classes, skipping ``offset`` per class."""
    return np.concatenate([np.flatnonzero(labels == c)[offset : offset + per_class] for c in range(classes)])


def write_imagefolder(root: Path, split: str, per_class: int, classes: int = 10, offset: int = 0, fmt: str = "png") -> Path:
    """root/<class>/<index>.<fmt> for a balanced subset; returns root."""
    images, labels = load(split)
    for i in pick(labels, per_class, classes, offset):
        folder = root / CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(folder / f"{split}-{i:05d}.{fmt}")
    return root
