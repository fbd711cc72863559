"""The loaders of a run: images (through the decoded-image cache when it fits), or the frozen backbone's features
when only the head trains; and the modules the training and evaluation steps call."""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from byoc_images import Fit
from train import distributed, sagemaker_env
from train.cores import core_share
from train.data import ImageDataset, ResumableSampler, balanced_weights, collate_skipping, loader_settings
from train.decoded_cache import CachedImageDataset, DecodedImages, open_or_build
from train.engine import DeviceInput, Precision
from train.errors import TrainingError
from train.features import extract, feature_loader
from train.models import Network
from train.sources import Split, Splits
from train.transforms import Preprocess, eval_pixels, train_pixels

log = logging.getLogger("train")


@dataclass
class Loaders:
    """What the epoch loop iterates over and calls."""

    train: DataLoader
    valid: DataLoader
    test: DataLoader | None
    train_sampler: ResumableSampler
    module: nn.Module  # the plain module that is stepped (the whole model, or the head alone): the Debugger hook's
    forward: nn.Module  # what the training step calls (``module``, wrapped by DDP and/or torch.compile)
    eval_forward: nn.Module
    skipped: set[str] = field(default_factory=set)  # images that could not be read while building


def require_compiler(device: torch.device) -> None:
    """torch.compile generates C++ (CPU) or Triton launchers (GPU), both built with a C compiler at run time."""
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        raise TrainingError(
            f"--compile needs a C compiler to build its {'Triton' if device.type == 'cuda' else 'C++'} kernels, "
            "and this "
            "image has none (compilers stay out of the training image). Drop --compile, or build an image that "
            "adds gcc."
        )


def open_decoded(
    splits: Splits, preprocess: Preprocess, args: argparse.Namespace, ctx: distributed.Context
) -> dict[int, DecodedImages]:
    """Decoded-image cache entries of the splits' sources (by ``id``); empty when the cache is off or cannot fit."""
    if args.decoded_cache == "off":
        return {}
    root = sagemaker_env.decoded_cache_dir() if args.decoded_cache == "auto" else Path(args.decoded_cache)
    workers = core_share(ctx.local_world_size)  # nothing else runs yet: every core of the rank's share decodes
    entries = {}
    for split in (splits.train, splits.valid, splits.test):
        if split is not None and id(split.source) not in entries:
            entry = open_or_build(split.source, preprocess, root, workers, args.strict_data)
            if entry is None:
                return {}
            entries[id(split.source)] = entry
    return entries


def image_loader(
    split: Split,
    transform,
    fit: Fit,
    args: argparse.Namespace,
    sampler: ResumableSampler,
    ctx: distributed.Context,
    decoded: dict[int, DecodedImages],
) -> DataLoader:
    """Batches of one split, from the decoded-image cache when it holds the split's source, else decoded as ``fit``
    asks."""
    entry = decoded.get(id(split.source))
    dataset = (
        CachedImageDataset(split, entry, transform)
        if entry
        else ImageDataset(split, transform, strict=args.strict_data, fit=fit)
    )
    workers, prefetch = loader_settings(args.workers, ctx.local_world_size)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=prefetch,
        collate_fn=collate_skipping,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
    )


def build_loaders(
    splits: Splits,
    net: Network,
    model: nn.Module,
    preprocess: Preprocess,
    precision: Precision,
    inputs: DeviceInput,
    args: argparse.Namespace,
    ctx: distributed.Context,
) -> Loaders:
    """Image loaders and the model to step; with a frozen backbone and no augmentation, its features are computed
    once and only the head trains on them."""
    balanced = args.imbalance == "balanced-sampler"
    num_classes = len(splits.classes)

    def sampler(split: Split, shuffle: bool) -> ResumableSampler:
        weights = balanced_weights(split.labels, num_classes) if shuffle and balanced else None
        return ResumableSampler(
            len(split), shuffle=shuffle, seed=args.seed, rank=ctx.rank, world_size=ctx.world_size, weights=weights
        )

    eval_tf, eval_fit = eval_pixels(preprocess), preprocess.fit()  # the pictures serving makes, then the centre crop
    cached = args.feature_cache == "auto" and args.finetune == "head" and args.augment == "none" and not ctx.enabled
    decoded = (
        {} if cached else open_decoded(splits, preprocess, args, ctx)
    )  # cached features decode each image once anyway
    valid = image_loader(splits.valid, eval_tf, eval_fit, args, sampler(splits.valid, False), ctx, decoded)
    test = (
        image_loader(splits.test, eval_tf, eval_fit, args, sampler(splits.test, False), ctx, decoded)
        if splits.test
        else None
    )
    if cached:
        log.info("backbone frozen and no augmentation: caching its features once, then training the head alone")
        sequential = ResumableSampler(len(splits.train), shuffle=False, seed=args.seed)
        features, labels, bad = extract(
            model,
            net.head,
            image_loader(splits.train, eval_tf, eval_fit, args, sequential, ctx, decoded),
            precision,
            inputs,
            "train",
        )
        weights = balanced_weights(labels.tolist(), num_classes) if balanced else None
        train_sampler = ResumableSampler(len(labels), shuffle=True, seed=args.seed, weights=weights)
        valid = feature_loader(*extract(model, net.head, valid, precision, inputs, "valid")[:2], args.batch_size, None)
        if test is not None:
            test = feature_loader(*extract(model, net.head, test, precision, inputs, "test")[:2], args.batch_size, None)
        train = feature_loader(features, labels, args.batch_size, train_sampler)
        return Loaders(train, valid, test, train_sampler, net.head, net.head, net.head, {f"train:{p}" for p in bad})
    if args.feature_cache == "auto" and args.finetune == "head":
        log.info("feature cache off: it needs --augment none and a single process")
    train_sampler = sampler(splits.train, True)
    train_fit = preprocess.fit(
        resize=args.augment == "none"
    )  # random crops take the picture decoded small, not resized
    train = image_loader(
        splits.train, train_pixels(preprocess, args.augment), train_fit, args, train_sampler, ctx, decoded
    )
    forward, eval_forward = model, model
    if ctx.enabled:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
        )
    if args.compile:
        require_compiler(ctx.device)
        forward, eval_forward = torch.compile(forward), torch.compile(model)
    return Loaders(train, valid, test, train_sampler, model, forward, eval_forward)
