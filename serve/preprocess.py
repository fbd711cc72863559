"""model.json's preprocessing in numpy + PIL, step for step the training side's eval transform
(torchvision Resize of the shorter side, CenterCrop, ToTensor, Normalize), without torch."""
from __future__ import annotations

import numpy as np
from PIL import Image

from serve.artifact import ModelSpec

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter``, as torchvision's Resize rounds it."""
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shorter * long / short)
    return (shorter, new_long) if width <= height else (new_long, shorter)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if size > width or size > height:  # pad with black first, as torchvision does
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((max(size - width, 0)) // 2, (max(size - height, 0)) // 2))
        image, (width, height) = padded, padded.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def resize_and_crop(image: Image.Image, resize: int, crop: int, interpolation: str) -> Image.Image:
    """Resize the shorter side to ``resize``, then take the centre ``crop``: torchvision's Resize and CenterCrop."""
    size = resized_size(image.size, resize)
    return center_crop(image if size == image.size else image.resize(size, RESAMPLE[interpolation]), crop)


def to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """An RGB picture -> the (3, crop, crop) float32 array the network takes. ToTensor and Normalize are one multiply
    and one subtraction per channel, ``(x / 255 - mean) / std = x / (255 std) - mean / std``, over PIL's contiguous
    bands (3x faster than normalising the interleaved HWC array and transposing it)."""
    picture = resize_and_crop(image if image.mode == "RGB" else image.convert("RGB"), spec.resize, spec.crop, spec.interpolation)
    scale = 1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32))
    shift = np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    out = np.empty((3, picture.height, picture.width), dtype=np.float32)
    for channel, band in enumerate(picture.split()):
        np.multiply(np.asarray(band), scale[channel], out=out[channel], dtype=np.float32)
        out[channel] -= shift[channel]
    return out
