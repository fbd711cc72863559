"""Decoding any image file into the upright 8-bit RGB picture every model expects (shared by train and serve)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from byoc_images.fit import DECODES, Fit, draft_jpeg, fitted, resize_shorter, resized_size

__all__ = ["DECODES", "Fit", "fitted", "open_rgb", "read_bytes", "resize_shorter", "resized_size", "to_rgb"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


MAX_ASPECT = (
    50  # longer side / shorter side: resizing the shorter side to the model's makes the longer one this much longer
)
MAX_JPEG_SCANS = (
    100  # encoders write 1 (baseline) to about 10 (progressive); each scan is one more pass over every pixel
)


class ImageTooLarge(ValueError):
    """The header announces more pixels than allowed (a decompression bomb, or just too big)."""


class ImageRefused(ValueError):
    """An image whose header promises far more work than its pixels are worth; ``error`` names why in a few words."""

    error = "image refused"


class ImageTooElongated(ImageRefused):
    """One side is more than MAX_ASPECT times the other: a 1 x 40,000 strip, resized to a 224 px shorter side,
    would take 6 GB."""

    error = "image too elongated"


class TooManyScans(ImageRefused):
    """A JPEG of more than MAX_JPEG_SCANS scans: 1,000 repeated scans of a 4,000 px square, 125 kB in all, take
    10 s to decode."""

    error = "too many JPEG scans"


def open_rgb(
    source: str | Path | bytes | BinaryIO, max_pixels: int | None = None, fit: Fit | None = None
) -> Image.Image:
    """Decode an image (raising on corrupt or truncated data) into an upright 8-bit RGB picture.

    ``max_pixels``, the aspect ratio (at most ``MAX_ASPECT``) and a JPEG's number of scans (at most
    ``MAX_JPEG_SCANS``) are checked before any pixel is decoded. Without ``fit`` every pixel is decoded; with it the
    picture comes out as ``fit`` asks (``byoc_images.fit``: a JPEG decoded at a DCT scale, other formats reduced,
    then resized), the one way training and serving both turn a file into the model's picture.
    """
    data = read_bytes(source)
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels is more than the {max_pixels} allowed")
        if max(width, height) > MAX_ASPECT * min(width, height):
            raise ImageTooElongated(
                f"{width}x{height} is longer than {MAX_ASPECT}:1, which the resize to the model's input would blow "
                "up; crop it"
            )
        jpeg = img.format in ("JPEG", "MPO")
        scans = data.count(b"\xff\xda") if jpeg else 0  # start-of-scan markers (0xff is escaped in scan data)
        if scans > MAX_JPEG_SCANS:
            raise TooManyScans(
                f"the JPEG holds {scans} scans, more than the {MAX_JPEG_SCANS} any encoder writes; save it again as a "
                "plain JPEG"
            )
        scale = draft_jpeg(img, fit) if jpeg else 1  # before loading: libjpeg then decodes at 1/2, 1/4 or 1/8 scale
        stored = img.size
        img.load()
        ImageOps.exif_transpose(
            img, in_place=True
        )  # a no-op when upright (a copy otherwise: 0.5 ms for a 384 px photo)
        full = (height, width) if img.size != stored else (width, height)  # upright, before any reduction
        return fitted(to_rgb(img), fit, full, scale)


def read_bytes(source: str | Path | bytes | BinaryIO) -> bytes:
    """The bytes of an image given as bytes, a path or an open binary file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source if isinstance(source, bytes) else bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: grey, palette, CMYK, 16-bit and alpha handled (``img`` itself when it is RGB already).

    Transparent pixels are composited on white, the way image viewers show them.
    """
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = Image.fromarray(_scale_to_uint8(np.asarray(img), sixteen_bit=img.mode.startswith("I;16")))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def _scale_to_uint8(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float pixels onto 0..255 (floats in 0..1 count as normalised)."""
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    peak = values.max() if values.size else 0.0
    if is_float and peak <= 1.0:
        values = values * 255.0
    elif sixteen_bit or peak > 255:
        values = values / 65535.0 * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
