"""How large a picture the model's transform needs, and decoding no more than that (shared by train and serve).

A 15 MP photo resized to a 256 px shorter side throws away 98 % of its pixels. ``scaled`` decoding lets libjpeg
skip most of them (its DCT-domain scaling, 1/2 or 1/4) and shrinks other formats by a whole factor (``Image.reduce``,
a box average) first, always leaving both sides at least ``HEADROOM`` times the resized size so that the final
antialiased resize still averages real pixels. ``exact`` decodes every pixel, as before.

Both limits were chosen by measurement (``python -m bench agreement``, 1,000 large real photos, two models): with a
2x headroom and libjpeg's 1/8 scale the top-1 answers of scaled and full decoding agreed 1.9 and 2.2 points less often
than full decoding agrees with itself after a JPEG quality 95 re-encode (the noise floor); 1/8 keeps only each 8x8
block's average (a box filter that aliases), and 1/4 with 2x left had too few pixels for the resize to average.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

DECODES = ("scaled", "exact")
HEADROOM = 3  # the decoded picture keeps at least this many pixels per output pixel on both sides
MAX_JPEG_SCALE = 4  # libjpeg's 1/4 at most: at 1/8 only each block's average is left
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Fit:
    """The shorter side the model's transform resizes to, its filter, and how to decode on the way there.

    With ``resize`` the picture comes out at that size (torchvision's ``Resize`` of the shorter side, bit for bit);
    without it, only decoded small (at least ``HEADROOM`` times that size), for transforms that crop at random first.
    """

    shorter: int
    interpolation: str = "bilinear"
    decode: str = "scaled"
    resize: bool = True

    def __post_init__(self):
        if self.decode not in DECODES:
            raise ValueError(f"decode {self.decode!r}: use one of {', '.join(DECODES)}")
        if self.interpolation not in RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r}: use one of {', '.join(RESAMPLE)}")


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter``, as torchvision's Resize rounds it."""
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shorter * long / short)
    return (shorter, new_long) if width <= height else (new_long, shorter)


def reduction(size: tuple[int, int], fit: Fit | None) -> int:
    """The whole factor a picture of ``size`` may be shrunk by before its final resize (1: none)."""
    if fit is None or fit.decode == "exact":
        return 1
    target = resized_size(size, fit.shorter)
    return max(1, min(size[0] // (HEADROOM * target[0]), size[1] // (HEADROOM * target[1])))


def draft_jpeg(img: Image.Image, fit: Fit | None) -> int:
    """Ask libjpeg to decode ``img`` (opened, not loaded) at the largest DCT reduction (1/4 or 1/2) that leaves both
    sides at least HEADROOM x the resized size; returns the reduction (1: every pixel)."""
    factor = min(reduction(img.size, fit), MAX_JPEG_SCALE)
    if factor < 2:
        return 1
    width, height = img.size
    drafted = img.draft(
        img.mode, (width // factor, height // factor)
    )  # PIL picks the largest scale <= factor; None: none
    return round(width / drafted[1][2]) if drafted else 1


def resize_shorter(img: Image.Image, fit: Fit) -> Image.Image:
    """The shorter side resized to ``fit.shorter`` with ``fit.interpolation``, antialiased (PIL), as torchvision
    does."""
    size = resized_size(img.size, fit.shorter)
    return img if size == img.size else img.resize(size, RESAMPLE[fit.interpolation])


def fitted(img: Image.Image, fit: Fit | None, full: tuple[int, int] | None = None, scale: int = 1) -> Image.Image:
    """A decoded upright RGB picture as ``fit`` asks: reduced by a whole factor (a box average) unless libjpeg already
    decoded it at 1/``scale``, then, with ``fit.resize``, resized to the size the whole picture (``full``, upright)
    resizes to, so that scaled and exact decoding give pictures of one geometry."""
    if fit is None:
        return img
    full = full or img.size
    factor = reduction(img.size, fit) if scale == 1 else 1  # after a DCT-scaled decode the resize averages the rest
    if factor > 1:
        img, scale = img.reduce(factor), factor
    if not fit.resize:
        return img
    if scale == 1:
        return resize_shorter(img, fit)
    box = (
        0,
        0,
        min(full[0] / scale, img.size[0]),
        min(full[1] / scale, img.size[1]),
    )  # the last row and column are partial
    return img.resize(resized_size(full, fit.shorter), RESAMPLE[fit.interpolation], box=box)
