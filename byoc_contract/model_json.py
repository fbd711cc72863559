"""model.json, the artifact's description: its schema and version, and the one place that reads, updates and writes it.

Training writes it (``train.export``), the int8 step updates it (``train.quantize``), the server and the benchmarks
read it. A model folder is untrusted, so its size is bounded before it is read, and every field serving depends on is
checked before any image is resized with it (a resize of 100,000 px would cost gigabytes per image).

Versions (``format_version``):
- 1: ``preprocess.decode`` may be absent, meaning ``exact`` (artifacts from before scaled decoding);
- 2: ``preprocess.decode`` is always written.
A version newer than ``VERSION`` is refused with what to do: this code cannot know what it changed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from byoc_images import DECODES

FILE = "model.json"
VERSION = 2
READABLE = (1, 2)

MAX_BYTES = 16 * 1024 * 1024  # room for 100,000 class names; ours is a few kB
MAX_SIDE = 4096  # resize and crop, in px
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class DescriptionError(ValueError):
    """model.json cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """``preprocess``: how an RGB image becomes the network's input (the eval transform training measured)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    decode: str


@dataclass(frozen=True)
class ModelJson:
    """A checked model.json: the fields both sides depend on, typed, and every section as read (``sections``)."""

    version: int
    architecture: str
    classes: tuple[str, ...]
    preprocess: Preprocessing
    onnx_file: str
    onnx_input: str
    onnx_output: str
    sections: Mapping[str, object]

    def section(self, name: str) -> dict:
        """A top-level object (``int8``, ``calibration``, ``explain``, ``metrics``), ``{}`` when absent."""
        value = self.sections.get(name)
        return dict(value) if isinstance(value, dict) else {}


def read(path: Path) -> ModelJson:
    """The checked description in ``path`` (a model.json or its folder), its size bounded before it is read."""
    path = path / FILE if path.is_dir() else path
    return checked(read_object(path), path)


def checked(info: dict, path: Path) -> ModelJson:
    """``info`` validated as a model.json of a readable version (``path`` names it in errors)."""
    version = info.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DescriptionError(f"{path}: format_version is {_shown(version)}: use the model.json training wrote.")
    if version not in READABLE:
        raise DescriptionError(
            f"{path} is format_version {version}, newer than this code reads ({', '.join(map(str, READABLE))}): "
            "serve it with the image of the training code that wrote it, or upgrade this one."
        )
    pre = info.get("preprocess")
    if version >= 2 and not (isinstance(pre, dict) and "decode" in pre):
        raise DescriptionError(
            f"{path}: format_version {version} needs preprocess.decode: use the model.json training wrote."
        )
    onnx = info.get("onnx")
    if not isinstance(onnx, dict) or not all(isinstance(onnx.get(k), str) for k in ("file", "input", "output")):
        raise DescriptionError(
            f'{path}: "onnx" must name the file, input and output: use the model.json training wrote.'
        )
    architecture = info.get("architecture", "unknown")
    return ModelJson(
        version=version,
        architecture=architecture if isinstance(architecture, str) else "unknown",
        classes=tuple(classes(info, path)),
        preprocess=Preprocessing(**preprocessing(info, path)),
        onnx_file=onnx["file"],
        onnx_input=onnx["input"],
        onnx_output=onnx["output"],
        sections=MappingProxyType(info),
    )


def write(model_dir: Path, info: dict) -> ModelJson:
    """Write ``info`` as ``model_dir``/model.json at this ``VERSION``, checked as a reader would check it first (so
    training never writes what the server refuses); the old file is replaced whole or not at all."""
    info = {"format_version": VERSION, **{k: v for k, v in info.items() if k != "format_version"}}
    path = model_dir / FILE
    text = json.dumps(info, indent=2, default=str)
    description = checked(json.loads(text), path)
    partial = path.with_name(f".{FILE}.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return description


def update(model_dir: Path, **sections: object) -> ModelJson:
    """Read ``model_dir``/model.json, replace the given top-level ``sections`` and write it back (at ``VERSION``)."""
    description = read(model_dir / FILE)
    info = {**description.sections, **sections}
    info["preprocess"] = {
        **info["preprocess"],
        "decode": description.preprocess.decode,
    }  # version 1: "exact" made explicit
    return write(model_dir, info)


def read_object(path: Path) -> dict:
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
            f"{path} holds a JSON {type(info).__name__}, not the object training writes: use the model.json "
            "training wrote."
        )
    return info


def preprocessing(info: dict, path: Path) -> dict:
    """``preprocess`` of the description read from ``path``, checked: ``resize`` and ``crop`` whole px in 1..MAX_SIDE, a
    known ``interpolation`` and ``decode``, three finite means and three finite positive standard deviations, RGB and
    NCHW."""
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
            f"{path}: preprocess.interpolation is {_shown(interpolation)}: it must be one of "
            f"{', '.join(INTERPOLATIONS)}."
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
