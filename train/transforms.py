"""Transform presets, as in torchvision's classification references; the eval preset is the one serving rebuilds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torchvision import transforms as T

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


def eval_transform(pre: Preprocess) -> T.Compose:
    """Resize the shorter side, center-crop, scale to 0..1, normalise."""
    return T.Compose(
        [
            T.Resize(pre.resize, interpolation=INTERPOLATIONS[pre.interpolation], antialias=True),
            T.CenterCrop(pre.crop),
            T.ToTensor(),
            T.Normalize(pre.mean, pre.std),
        ]
    )


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
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if augment == "strong":
        steps.append(T.RandomErasing(p=0.25))
    return T.Compose(steps)
