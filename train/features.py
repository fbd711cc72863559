"""Frozen-backbone feature cache: backbone outputs computed once, later epochs train the head alone."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from train.engine import DeviceInput, Precision, _progress_bar

log = logging.getLogger(__name__)


@torch.no_grad()
def extract(model: nn.Module, head: nn.Module, loader, precision: Precision, inputs: DeviceInput, name: str):
    """The head's input for every readable sample: (features float32 on CPU, labels, skipped positions)."""
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float().cpu()))
    features, labels, skipped_all = [], [], []
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        for images, targets, skipped in _progress_bar(loader, f"features {name}", len(loader)):
            skipped_all.extend(skipped)
            if not len(targets):
                continue
            images = inputs(images)
            with precision.autocast():
                model(images)
            features.append(captured.pop())
            labels.append(targets)
    finally:
        handle.remove()
        model.train(was_training)
    result = torch.cat(features), torch.cat(labels)
    seconds = time.perf_counter() - started
    log.info(
        "cached %s features: %d x %d in %.1f s (%.1f images/s)",
        name,
        *result[0].shape,
        seconds,
        len(result[1]) / max(seconds, 1e-9),
    )
    return result[0], result[1], skipped_all


class FeatureDataset(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


def collate_features(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch]), []


def feature_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler) -> DataLoader:
    return DataLoader(
        FeatureDataset(features, labels), batch_size=batch_size, sampler=sampler, collate_fn=collate_features
    )
