"""Transform presets, as in torchvision's classification references; the eval preset is the one serving rebuilds.

The presets take a PIL image or a uint8 CHW tensor (a decoded-cache entry) and give the same float tensor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2 as T

INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC, "nearest": T.InterpolationMode.NEAREST}
AUGMENTATIONS = ("none", "light", "strong")


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the network's input; written verbatim into model.json."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def to_json(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "channel_order": "RGB", "layout": "NCHW", "scale": 1 / 255}


def to_float(pre: Preprocess) -> list:
    """uint8 image -> normalised float32 plain tensor."""
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std), T.ToPureTensor()]


def resize_square(pre: Preprocess) -> T.Compose:
    """Shorter side to ``pre.resize``, then the central square: what the decoded-image cache stores."""
    return T.Compose([T.Resize(pre.resize, interpolation=INTERPOLATIONS[pre.interpolation], antialias=True), T.CenterCrop(pre.resize)])


def eval_transform(pre: Preprocess) -> T.Compose:
    """Resize the shorter side, center-crop, scale to 0..1, normalise (on a cached square the resize is a no-op)."""
    return T.Compose([T.Resize(pre.resize, interpolation=INTERPOLATIONS[pre.interpolation], antialias=True), T.CenterCrop(pre.crop), *to_float(pre)])


def train_transform(pre: Preprocess, augment: str) -> T.Compose:
    """``none`` is the eval preset (and lets frozen-backbone features be cached); ``light`` adds a
    random resized crop and a flip; ``strong`` adds TrivialAugment and random erasing."""
    if augment == "none":
        return eval_transform(pre)
    steps = [
        T.RandomResizedCrop(pre.crop, scale=(0.35, 1.0), interpolation=INTERPOLATIONS[pre.interpolation], antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if augment == "strong":
        steps.append(T.TrivialAugmentWide(interpolation=INTERPOLATIONS[pre.interpolation]))
    steps += to_float(pre)
    if augment == "strong":
        steps.insert(-1, T.RandomErasing(p=0.25))
    return T.Compose(steps)
