"""Real Fashion-MNIST photos (Debian package dataset-fashion-mnist) written out as small datasets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(
    os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
)  # another folder: a machine without the package
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


def write_imagefolder(
    root: Path, split: str, per_class: int, classes: int = 10, offset: int = 0, fmt: str = "png"
) -> Path:
    """root/<class>/<index>.<fmt> for a balanced subset; returns root."""
    images, labels = load(split)
    for i in pick(labels, per_class, classes, offset):
        folder = root / CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(folder / f"{split}-{i:05d}.{fmt}")
    return root


def _jpeg(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_hdf5(root: Path, per_class: dict[int, int]) -> Path:
    """The ISIC 2024 layout: train-image.hdf5 (JPEG bytes keyed by isic_id) + train-metadata.csv (isic_id,target).

    ``per_class`` maps a Fashion-MNIST class to the number of images of it (target = its position in the dict).
    """
    import h5py

    images, labels = load("train")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with h5py.File(root / "train-image.hdf5", "w") as h5:
        for target, (cls, count) in enumerate(per_class.items()):
            for i in np.flatnonzero(labels == cls)[:count]:
                key = f"ISIC_{i:07d}"
                h5.create_dataset(key, data=np.frombuffer(_jpeg(images[i]), dtype=np.uint8))
                rows.append(f"{key},{target}")
    (root / "train-metadata.csv").write_text("isic_id,target\n" + "\n".join(rows) + "\n")
    return root


def write_cifar(root: Path, per_class: int, classes: int = 10, fine: bool = False) -> Path:
    """CIFAR python batches (32x32 RGB): data_batch_1 + test_batch + batches.meta, or CIFAR-100's train/test/meta."""
    import pickle

    root.mkdir(parents=True, exist_ok=True)
    label_key, names_key = (b"fine_labels", b"fine_label_names") if fine else (b"labels", b"label_names")
    for split, name in (("train", "train" if fine else "data_batch_1"), ("t10k", "test" if fine else "test_batch")):
        images, labels = load(split)
        chosen = pick(labels, per_class, classes)
        padded = np.zeros((len(chosen), 32, 32), dtype=np.uint8)
        padded[:, 2:30, 2:30] = images[chosen]
        rgb = np.repeat(padded[:, None], 3, axis=1).reshape(len(chosen), -1)
        with (root / name).open("wb") as handle:
            pickle.dump({b"data": rgb, label_key: [int(v) for v in labels[chosen]]}, handle)
    with (root / ("meta" if fine else "batches.meta")).open("wb") as handle:
        pickle.dump({names_key: [c.encode() for c in CLASSES[:classes]]}, handle)
    return root
