"""model.json, the artifact's description, as its readers take it: the server and ``python -m train.quantize``.

A model folder is untrusted, so its size is bounded before it is read and every preprocessing field is checked
before any image is resized with it (a resize of 100,000 px would cost gigabytes per image).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from byoc_images import DECODES

MAX_BYTES = 16 * 1024 * 1024  # room for 100,000 class names; ours is a few kB
MAX_SIDE = 4096  # resize and crop, in px
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class DescriptionError(ValueError):
    """model.json cannot be used; the message says what is wrong and what to do."""


def read(path: Path) -> dict:
    """The JSON object in ``path``, its size bounded before it is read."""
    if not path.is_file():
        raise DescriptionError(
            f"{path} is missing: the model folder must hold the artifact written by the training image."
        )
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DescriptionError(
            f"{path} is {size} bytes, more than the {MAX_BYTES} a model description may be: use the one training wrote."
        )
    try:
        info = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DescriptionError(
            f"{path} is not JSON ({type(exc).__name__}: {exc}): use the model.json training wrote."
        ) from None
    if not isinstance(info, dict):
        raise DescriptionError(
            f"{path} holds a JSON {type(info).__name__}, not the object training writes: use the model.json training wrote."
        )
    return info


def preprocessing(info: dict, path: Path) -> dict:
    """``preprocess`` of the description read from ``path``, checked: ``resize`` and ``crop`` whole px in 1..MAX_SIDE, a known
    ``interpolation`` and ``decode``, three finite means and three finite positive standard deviations, RGB and NCHW."""
    pre = info.get("preprocess")
    if not isinstance(pre, dict):
        raise DescriptionError(f'{path} has no "preprocess" object: use the model.json training wrote.')
    sides = {key: pre.get(key) for key in ("resize", "crop")}
    for key, side in sides.items():
        if not isinstance(side, int) or isinstance(side, bool) or not 1 <= side <= MAX_SIDE:
            raise DescriptionError(
                f"{path}: preprocess.{key} is {_shown(side)}: it must be a whole number of px from 1 to {MAX_SIDE}."
            )
    interpolation = pre.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise DescriptionError(
            f"{path}: preprocess.interpolation is {_shown(interpolation)}: it must be one of {', '.join(INTERPOLATIONS)}."
        )
    decode = pre.get("decode", "exact")  # artifacts from before scaled decoding were evaluated on every pixel
    if decode not in DECODES:
        raise DescriptionError(
            f"{path}: preprocess.decode is {_shown(decode)}: it must be one of {', '.join(DECODES)}."
        )
    mean, std = _three(pre, "mean", path), _three(pre, "std", path)
    if min(std) <= 0:
        raise DescriptionError(f"{path}: preprocess.std is {list(std)}: each must be above 0.")
    if pre.get("channel_order", "RGB") != "RGB" or pre.get("layout", "NCHW") != "NCHW":
        raise DescriptionError(f"{path}: preprocess asks for other than RGB, NCHW inputs: only those are supported.")
    return {**sides, "mean": mean, "std": std, "interpolation": interpolation, "decode": decode}


def classes(info: dict, path: Path) -> list[str]:
    """``classes`` of the description read from ``path``: one name (a string) per output of the network."""
    names = info.get("classes")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DescriptionError(
            f'{path}: "classes" must be a list of class names (strings): use the model.json training wrote.'
        )
    return names


def _three(pre: dict, key: str, path: Path) -> tuple[float, float, float]:
    values = pre.get(key)
    numbers = values if isinstance(values, list) and len(values) == 3 else []
    if not numbers or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers
    ):
        raise DescriptionError(
            f"{path}: preprocess.{key} is {_shown(values)}: it must be three finite numbers, one per RGB channel."
        )
    return tuple(float(v) for v in numbers)


def _shown(value: object) -> str:
    """``value`` as it appears in an error message: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
