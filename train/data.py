"""torch datasets, a resumable sampler and a collate that drops unreadable images."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from byoc_images import Fit
from train.cores import auto_workers, core_share
from train.errors import TrainingError
from train.sources import Split

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Images of one split, decoded as ``fit`` asks (``Preprocess.fit``), then transformed; an unreadable image
    yields ``None`` (or raises when strict)."""

    def __init__(self, split: Split, transform: Callable, strict: bool, fit: Fit):
        self.split = split
        self.transform = transform
        self.strict = strict
        self.fit = fit

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int):
        index = self.split.indices[position]
        source = self.split.source
        try:
            image = source.read(index, self.fit)
        except Exception as exc:  # PIL raises many types for bad files
            if self.strict:
                raise TrainingError(
                    f"Cannot read image {source.describe(index)}: {exc}. Remove or replace the file, "
                    "or drop --strict-data to skip unreadable images."
                ) from exc
            log.warning("skipping unreadable image %s: %s", source.describe(index), exc)
            return None, source.labels[index], position
        return self.transform(image), source.labels[index], position


def loader_settings(workers: int | None, ranks_on_node: int = 1) -> tuple[int, int | None]:
    """(DataLoader workers, prefetch factor) per rank; ``workers=None`` picks them from the usable cores.

    Auto: ``train.cores.auto_workers`` of the rank's core share. Two batches in flight per worker: 4 measured slower
    (bench/input_pipeline.py)."""
    if workers is None:
        workers = auto_workers(core_share(ranks_on_node))
    return workers, (None if workers == 0 else 2)


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Stack the readable samples; return the positions of the unreadable ones as the third item."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    skipped = [p for x, _, p in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([x for x, _ in good])
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return images, labels, skipped


class ResumableSampler(Sampler[int]):
    """Seeded order per epoch that can start mid-epoch, sharded across ranks.

    ``weights`` draws with replacement in proportion to them (the balanced sampler);
    otherwise a shuffled (or, for evaluation, sequential) permutation.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: torch.Tensor | None = None,
    ):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.weights = weights
        self.epoch = 0
        self.start = 0
        self.per_rank = (
            math.ceil(size / world_size) if shuffle or weights is not None else len(range(rank, size, world_size))
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` samples of this rank."""
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            total = self.per_rank * self.world_size
            full = torch.multinomial(self.weights, total, replacement=True, generator=generator).tolist()
        elif self.shuffle:
            full = torch.randperm(self.size, generator=generator).tolist()
            full += full[: self.per_rank * self.world_size - self.size]  # pad so every rank has equal steps
        else:
            return list(range(self.rank, self.size, self.world_size))
        return full[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


def class_counts(labels: list[int], num_classes: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes).float()


def balanced_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Per-sample weights so that every class is drawn equally often."""
    counts = class_counts(labels, num_classes).clamp(min=1)
    return (1.0 / counts)[torch.tensor(labels, dtype=torch.long)]


def class_loss_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for the loss, normalised to mean 1 over present classes."""
    counts = class_counts(labels, num_classes)
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights
