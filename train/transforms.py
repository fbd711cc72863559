"""Transform presets, as in torchvision's classification references; the eval preset is the one serving rebuilds.

The presets take a PIL image or a uint8 CHW tensor (a decoded-cache entry) and give the same float tensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2 as T

from byoc_images import Fit

INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}
AUGMENTATIONS = ("none", "light", "strong")


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the network's input; written verbatim into model.json."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    decode: str = (
        "scaled"  # byoc_images.fit: "scaled" lets libjpeg skip the pixels the resize drops; "exact" decodes all
    )

    def fit(self, resize: bool = True) -> Fit:
        """How ``byoc_images.open_rgb`` decodes for this preprocessing: resized to ``self.resize`` (the eval pictures,
        as serving makes them), or only decoded small (``resize=False``: for random crops)."""
        return Fit(self.resize, self.interpolation, self.decode, resize)

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": "RGB",
            "layout": "NCHW",
            "scale": 1 / 255,
        }


def to_float(pre: Preprocess) -> list:
    """uint8 image -> normalised float32 plain tensor."""
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std), T.ToPureTensor()]


def resize_square(pre: Preprocess) -> T.Compose:
    """Shorter side to ``pre.resize``, then the central square: what the decoded-image cache stores."""
    return T.Compose(
        [
            T.Resize(pre.resize, interpolation=INTERPOLATIONS[pre.interpolation], antialias=True),
            T.CenterCrop(pre.resize),
        ]
    )


def eval_pixels(pre: Preprocess) -> T.Compose:
    """Resize the shorter side, center-crop; uint8 CHW out (on a cached square the resize is a no-op)."""
    resize = T.Resize(pre.resize, interpolation=INTERPOLATIONS[pre.interpolation], antialias=True)
    return T.Compose([resize, T.CenterCrop(pre.crop), T.ToImage(), T.ToPureTensor()])


def eval_transform(pre: Preprocess) -> T.Compose:
    """The eval pixels scaled to 0..1 and normalised: exactly what serving feeds the network."""
    return T.Compose([eval_pixels(pre), *to_float(pre)])


def train_pixels(pre: Preprocess, augment: str) -> T.Compose:
    """uint8 CHW training crops; the loaders hand them over as they are and ``DeviceInput`` normalises them.

    ``none`` is the eval preset (and lets frozen-backbone features be cached); ``light`` adds a random resized
    crop and a flip; ``strong`` adds TrivialAugment and random erasing (with the mean colour, which is 0 once
    normalised)."""
    if augment == "none":
        return eval_pixels(pre)
    steps = [
        T.RandomResizedCrop(
            pre.crop, scale=(0.35, 1.0), interpolation=INTERPOLATIONS[pre.interpolation], antialias=True
        ),
        T.RandomHorizontalFlip(),
        T.ToImage(),
    ]
    if augment == "strong":
        mean_colour = [round(255 * m) for m in pre.mean]
        steps += [
            T.TrivialAugmentWide(interpolation=INTERPOLATIONS[pre.interpolation]),
            T.RandomErasing(p=0.25, value=mean_colour),
        ]
    return T.Compose([*steps, T.ToPureTensor()])
