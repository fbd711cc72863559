"""model.json's preprocessing in numpy + PIL, step for step the training side's eval transform
(torchvision Resize of the shorter side, CenterCrop, ToTensor, Normalize), without torch."""
from __future__ import annotations

import numpy as np
from PIL import Image

from serve.artifact import ModelSpec

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def resize_shorter_side(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    return image if new_size == image.size else image.resize(new_size, RESAMPLE[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if size > width or size > height:  # pad with black first, as torchvision does
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((max(size - width, 0)) // 2, (max(size - height, 0)) // 2))
        image, (width, height) = padded, padded.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """An RGB picture -> the (3, crop, crop) float32 array the network takes."""
    image = center_crop(resize_shorter_side(image, spec.resize, spec.interpolation), spec.crop)
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return (array - mean) / std
