"""Decoded-image cache: each image of a source decoded once, resized to the training resolution and kept
as uint8 in a memory-mapped file. Later epochs read it instead of decoding again, and so do later runs on
the same files (the trials of a tuning job), because an entry is named after the source's content.

Layout of ``<root>/<key>/``: ``images.u8`` (N x S x S x 3, the ``resize_square`` of every image),
``readable.npy`` (False where an image could not be decoded) and ``meta.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from train.data import ImageDataset
from train.engine import _progress_bar
from train.sources import ImageSource, Split
from train.transforms import Preprocess, resize_square

log = logging.getLogger(__name__)

FORMAT = 1
DISK_SHARE = 0.8  # never fill more than this share of the free space


@dataclass(frozen=True)
class DecodedImages:
    """A finished cache entry; opened lazily so that DataLoader workers map the file themselves."""

    folder: Path
    count: int
    side: int

    def images(self) -> np.ndarray:
        return np.memmap(
            self.folder / "images.u8", dtype=np.uint8, mode="r", shape=(self.count, self.side, self.side, 3)
        )

    def readable(self) -> np.ndarray:
        return np.load(self.folder / "readable.npy")


def entry_key(source: ImageSource, pre: Preprocess) -> str:
    """Names the pixels: the source's content identity, the stored side, the resampling filter and the decode."""
    digest = hashlib.sha256(f"{FORMAT}|{type(source).__name__}|{pre.resize}|{pre.interpolation}|{pre.decode}".encode())
    for part in source.identity():
        digest.update(part)
    return digest.hexdigest()[:24]


def open_or_build(source: ImageSource, pre: Preprocess, root: Path, workers: int, strict: bool) -> DecodedImages | None:
    """The cache entry of ``source``, built now when missing; None (and a log line) when the disk is too small.

    Concurrent runs on one machine (parallel tuning trials, ranks of a node) wait for the one that builds.
    """
    key = entry_key(source, pre)
    folder = root / key
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f"{key}.lock"):
        if (folder / "meta.json").is_file():
            meta = json.loads((folder / "meta.json").read_text())
            log.info(
                "decoded-image cache: reusing %s (%d images at %d px, built in %.1f s)",
                folder,
                meta["count"],
                meta["side"],
                meta["seconds"],
            )
        else:
            needed = len(source) * pre.resize * pre.resize * 3
            free = shutil.disk_usage(root).free
            if needed > DISK_SHARE * free:
                log.warning(
                    "decoded-image cache off: %d images at %d px need %.1f GB and %s has %.1f GB free; "
                    "give a larger volume or --decoded-cache DIR elsewhere, or a smaller --resize-size",
                    len(source),
                    pre.resize,
                    needed / 1e9,
                    root,
                    free / 1e9,
                )
                return None
            _build(source, pre, folder, workers, strict)
    return DecodedImages(folder, len(source), pre.resize)


def _build(source: ImageSource, pre: Preprocess, folder: Path, workers: int, strict: bool) -> None:
    """Decode into a private folder and rename it into place; nothing is left behind on failure."""
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        seconds = _decode_into(source, pre, partial, workers, strict)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "decoded-image cache: %d images decoded once into %s (%.1f GB, %.1f s, %.0f images/s)",
        len(source),
        folder,
        len(source) * pre.resize**2 * 3 / 1e9,
        seconds,
        len(source) / max(seconds, 1e-9),
    )


def _decode_into(source: ImageSource, pre: Preprocess, partial: Path, workers: int, strict: bool) -> float:
    """Fill ``partial`` with the entry's files; returns the seconds it took."""
    started = time.perf_counter()
    images = np.memmap(partial / "images.u8", dtype=np.uint8, mode="w+", shape=(len(source), pre.resize, pre.resize, 3))
    readable = np.zeros(len(source), dtype=bool)
    squares = ImageDataset(
        Split(source, list(range(len(source)))), T.Compose([resize_square(pre), np.asarray]), strict, pre.fit()
    )
    loader = DataLoader(squares, batch_size=64, num_workers=workers, collate_fn=list)
    for batch in _progress_bar(loader, "decoding into the cache", len(loader)):
        for square, _label, index in batch:
            if square is not None:
                images[index] = square
                readable[index] = True
    images.flush()
    del images
    np.save(partial / "readable.npy", readable)
    seconds = time.perf_counter() - started
    meta = {
        "count": len(source),
        "side": pre.resize,
        "unreadable": int((~readable).sum()),
        "seconds": round(seconds, 2),
        "format": FORMAT,
    }
    (partial / "meta.json").write_text(json.dumps(meta))
    return seconds


@contextmanager
def _exclusive(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CachedImageDataset(Dataset):
    """A split read from a decoded-image cache entry; same items as ``ImageDataset``."""

    def __init__(self, split: Split, entry: DecodedImages, transform):
        self.split, self.entry, self.transform = split, entry, transform
        self.labels = split.source.labels
        self._images: np.ndarray | None = None
        self._readable: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int):
        if self._images is None:
            self._images, self._readable = self.entry.images(), self.entry.readable()
        index = self.split.indices[position]
        if not self._readable[index]:
            return None, self.labels[index], position
        square = torch.from_numpy(np.array(self._images[index])).permute(2, 0, 1)
        return self.transform(square), self.labels[index], position

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_readable": None}
