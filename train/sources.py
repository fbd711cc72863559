"""Where labelled images come from: ImageFolder trees, HDF5 + CSV (ISIC), CIFAR pickle batches.

A source is a list of labels plus a way to read image ``i``; splits are index lists over a source.
"""

from __future__ import annotations

import csv
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from byoc_images import IMAGE_EXTENSIONS, Fit, fitted, open_rgb
from train.errors import TrainingError

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": ("train", "training"), "valid": ("valid", "validation", "val"), "test": ("test", "testing")}


class ImageSource:
    """Labelled images: ``labels[i]`` is the class index of image ``i``, ``read(i, fit)`` decodes it (as ``fit`` asks:
    ``byoc_images.open_rgb``)."""

    classes: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int, fit: Fit | None = None) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where image ``index`` lives, for log lines about it."""
        raise NotImplementedError

    def identity(self) -> Iterator[bytes]:
        """Bytes that change whenever any image's content may have changed (names the decoded-image cache)."""
        raise NotImplementedError


class FolderSource(ImageSource):
    """ImageFolder layout: one sub-folder per class, images inside (any depth)."""

    def __init__(self, root: Path, classes: list[str] | None = None):
        self.root = root
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes = classes if classes is not None else found
        self.files: list[Path] = []
        self.labels = []
        for label, name in enumerate(self.classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    self.files.append(path)
                    self.labels.append(label)

    def read(self, index: int, fit: Fit | None = None) -> Image.Image:
        return open_rgb(self.files[index], fit=fit)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def identity(self) -> Iterator[bytes]:
        for path in self.files:
            stat = path.stat()
            yield f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()


class HDF5Source(ImageSource):
    """ISIC 2024 layout: ``*.hdf5`` of encoded images keyed by id, ``*.csv`` with ``isic_id,target``."""

    def __init__(self, hdf5_path: Path, csv_path: Path, id_column: str = "isic_id", label_column: str = "target"):
        self.hdf5_path = hdf5_path
        with csv_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or id_column not in rows[0] or label_column not in rows[0]:
            raise TrainingError(
                f"{csv_path} needs the columns '{id_column}' and '{label_column}' (found: "
                f"{', '.join(rows[0]) if rows else 'an empty file'}); fix the CSV header."
            )
        values = sorted({row[label_column] for row in rows}, key=_natural_key)
        self.classes = values
        index = {value: i for i, value in enumerate(values)}
        self.keys = [row[id_column] for row in rows]
        self.labels = [index[row[label_column]] for row in rows]
        self._file = None  # opened lazily, once per DataLoader worker (h5py handles do not survive fork)

    def read(self, index: int, fit: Fit | None = None) -> Image.Image:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.hdf5_path, "r")
        return open_rgb(np.asarray(self._file[self.keys[index]]).tobytes(), fit=fit)

    def describe(self, index: int) -> str:
        return f"{self.hdf5_path.name}[{self.keys[index]}]"

    def identity(self) -> Iterator[bytes]:
        stat = self.hdf5_path.stat()
        yield f"{self.hdf5_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        yield "\n".join(self.keys).encode()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


class CifarSource(ImageSource):
    """CIFAR-10/100 python pickle batches (``data_batch_*``/``test_batch`` or ``train``/``test``)."""

    def __init__(self, root: Path, split: str):
        meta_file = next((root / n for n in ("batches.meta", "meta") if (root / n).is_file()), None)
        if meta_file is None:
            raise TrainingError(f"{root} has CIFAR batches but no 'batches.meta' or 'meta' file; upload it too.")
        meta = _unpickle(meta_file)
        fine = "fine_label_names" in meta
        if not isinstance(meta.get("fine_label_names" if fine else "label_names"), list):
            raise TrainingError(
                f"{meta_file} has no list of label names ('label_names' or 'fine_label_names'); upload the CIFAR meta "
                "file unchanged."
            )
        self.classes = [str(c) for c in meta["fine_label_names" if fine else "label_names"]]
        label_key = "fine_labels" if fine else "labels"
        names = (
            ["test_batch", "test"]
            if split == "test"
            else sorted(p.name for p in root.glob("data_batch_*")) or ["train"]
        )
        images, labels = [], []
        for name in names:
            if (root / name).is_file():
                batch = _unpickle(root / name)
                if "data" not in batch or label_key not in batch:
                    raise TrainingError(
                        f"{root / name} lacks 'data' or '{label_key}'; upload the CIFAR batches unchanged."
                    )
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.extend(int(v) for v in batch[label_key])
        if not images:
            raise TrainingError(f"{root} has no CIFAR {split} batch ({' or '.join(names)}).")
        self.images = np.concatenate(images)
        self.labels = labels

    def read(self, index: int, fit: Fit | None = None) -> Image.Image:
        return fitted(Image.fromarray(self.images[index], mode="RGB"), fit)

    def describe(self, index: int) -> str:
        return f"cifar[{index}]"

    def identity(self) -> Iterator[bytes]:
        yield self.images.tobytes()


@dataclass
class Split:
    """A subset of one source."""

    source: ImageSource
    indices: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        return [self.source.labels[i] for i in self.indices]


@dataclass
class Splits:
    classes: list[str]
    train: Split
    valid: Split
    test: Split | None
    layout: str


# What pickled CIFAR batches contain besides dicts, lists, ints and bytes: numpy arrays (from numpy 1 or 2).
CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


class CifarUnpickler(pickle.Unpickler):
    """Loads CIFAR batches only: any other class or function named in the file is refused, so nothing in it runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which CIFAR batches never contain")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            raw = CifarUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise TrainingError(
            f"{path} is not a CIFAR python batch ({exc}); it was not loaded, and nothing in it ran. Upload the batches "
            "from cifar-10-python.tar.gz / cifar-100-python.tar.gz unchanged, or use class folders."
        ) from None
    if not isinstance(raw, dict):
        raise TrainingError(
            f"{path} is not a CIFAR python batch (it holds a {type(raw).__name__}, not a dict); upload the batches "
            "unchanged."
        )
    return {k.decode() if isinstance(k, bytes) else k: _decode(v) for k, v in raw.items()}


def _decode(value):
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _natural_key(text: str):
    return (0, float(text)) if _is_number(text) else (1, text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def stratified_split(labels: list[int], fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """Split indices into ``len(fractions) + 1`` parts with each class in the same proportions.

    Every class with at least ``len(fractions) + 1`` images gets at least one image in each part.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for members in by_class.values():
        members = list(rng.permutation(members))
        start = 0
        for part, fraction in zip(parts, fractions, strict=False):
            take = round(fraction * len(members))
            if len(members) > len(fractions):
                take = max(take, 1)
            part.extend(members[start : start + take])
            start += take
        parts[-1].extend(members[start:])
    return [sorted(int(i) for i in part) for part in parts]


def _channel_has_files(path: Path | None) -> bool:
    return path is not None and path.is_dir() and any(p.is_file() for p in path.rglob("*"))


def _split_subfolders(root: Path) -> dict[str, Path]:
    """train/valid/test sub-folders of one channel, when the channel holds the whole dataset."""
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if (root / alias).is_dir():
                found[split] = root / alias
                break
    return (
        found
        if "train" in found
        and len({p.name for p in root.iterdir() if p.is_dir()} - {p.name for p in found.values()}) == 0
        else {}
    )


def _folder_split(root: Path, classes: list[str], name: str) -> Split:
    source = FolderSource(root, classes)
    extra = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in classes
    )
    missing = sorted(set(classes) - {p.name for p in root.iterdir() if p.is_dir()})
    if extra or missing:
        raise TrainingError(
            f"The class folders of '{name}' ({root}) differ from 'train': "
            f"only in {name}: {extra or 'none'}; only in train: {missing or 'none'}. "
            "Every split needs the same class folders (an empty folder is fine); rename or add them."
        )
    return Split(source, list(range(len(source))))


def load_splits(
    train_dir: Path,
    valid_dir: Path | None,
    test_dir: Path | None,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> Splits:
    """Find the dataset layout in the channels and return train/valid/test splits.

    Missing valid/test channels are carved out of train with a stratified split.
    """
    if not _channel_has_files(train_dir):
        raise TrainingError(
            f"The 'train' channel ({train_dir}) is missing or empty. Point the training job's 'train' "
            "input at an S3 prefix (or a local folder) holding class folders, an HDF5 + CSV pair, or CIFAR batches."
        )
    nested = _split_subfolders(train_dir)
    if nested:
        log.info("the train channel holds split folders: %s", ", ".join(sorted(nested)))
        train_dir = nested["train"]
        valid_dir = nested.get("valid", valid_dir)
        test_dir = nested.get("test", test_dir)
    has_valid, has_test = _channel_has_files(valid_dir), _channel_has_files(test_dir)
    hdf5 = sorted(train_dir.glob("*.hdf5")) + sorted(train_dir.glob("*.h5"))
    cifar = any((train_dir / n).is_file() for n in ("data_batch_1", "train")) and any(
        (train_dir / n).is_file() for n in ("batches.meta", "meta")
    )
    test_source: ImageSource | None = None  # CIFAR's own test batch
    if hdf5:
        csvs = sorted(train_dir.glob("*.csv"))
        if not csvs:
            raise TrainingError(f"{hdf5[0]} needs a CSV of labels (isic_id,target) beside it in the train channel.")
        source: ImageSource = HDF5Source(hdf5[0], csvs[0])
        layout = "hdf5+csv"
    elif cifar:
        source = CifarSource(train_dir, "train")
        layout = "cifar"
        if not has_test:
            test_source = (
                CifarSource(train_dir, "test")
                if any((train_dir / n).is_file() for n in ("test_batch", "test"))
                else None
            )
    else:
        source = FolderSource(train_dir)
        layout = "imagefolder"
        if not source.classes:
            raise TrainingError(
                f"The 'train' channel ({train_dir}) has no class folders; put each class's images in a folder named "
                "after it."
            )
    if len(source) == 0:
        raise TrainingError(
            f"The 'train' channel ({train_dir}) holds no images with a known extension ({', '.join(IMAGE_EXTENSIONS)})."
        )
    classes = source.classes
    all_train = list(range(len(source)))

    test: Split | None = None
    if has_test:
        test = _folder_split(test_dir, classes, "test")
    elif test_source is not None:
        test = Split(test_source, list(range(len(test_source))))
    if has_valid:
        valid = _folder_split(valid_dir, classes, "valid")
        if test is None and layout != "imagefolder":
            train_idx, test_idx = stratified_split(source.labels, (1 - test_fraction,), seed)
            test = Split(source, test_idx)
            all_train = train_idx
        train = Split(source, all_train)
    else:
        carve_test = test is None and layout == "hdf5+csv"
        fractions = (valid_fraction, test_fraction) if carve_test else (valid_fraction,)
        parts = stratified_split(source.labels, fractions, seed)
        valid = Split(source, parts[0])
        if carve_test:
            test = Split(source, parts[1])
        train = Split(source, parts[-1])
        log.info(
            "no 'valid' channel: %d of %d train images held out for validation (stratified, seed %d)",
            len(valid),
            len(source),
            seed,
        )
    if len(valid) == 0:
        raise TrainingError("The validation split is empty; add a 'valid' channel or raise --valid-fraction.")
    return Splits(classes=classes, train=train, valid=valid, test=test, layout=layout)
