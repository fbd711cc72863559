"""Class activation maps without torch: the network's last feature map (the model's second output) weighted by the
head's weights for the top class (numpy), and a heatmap overlay of the input picture as a PNG (PIL)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from serve.artifact import ArtifactError, ModelSpec
from serve.encode import query_or_attribute
from serve.http_common import RequestError

EXPLAIN_METHODS = ("cam",)
OPACITY = 0.5


@dataclass(frozen=True)
class CamHead:
    """The head a class activation map is computed with: Linear ``weight`` (classes, channels) and ``bias``, and
    for ConvNeXt the LayerNorm applied to the pooled features before it."""

    weight: np.ndarray
    bias: np.ndarray
    norm_weight: np.ndarray | None = None
    norm_bias: np.ndarray | None = None
    norm_eps: float = 1e-6

    @classmethod
    def load(cls, path: Path, num_classes: int) -> CamHead:
        """The artifact's head arrays (plain .npz, never unpickled), checked against the model's classes."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                found = {k: arrays[k].astype(np.float32) for k in arrays.files}
            head = cls(
                found["weight"],
                found["bias"],
                found.get("norm_weight"),
                found.get("norm_bias"),
                float(found.get("norm_eps", 1e-6)),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{path} is not a class activation map head ({type(exc).__name__}: {exc})") from None
        if head.weight.ndim != 2 or head.weight.shape[0] != num_classes or head.bias.shape != (num_classes,):
            raise ArtifactError(
                f"{path}: weight {head.weight.shape} and bias {head.bias.shape} do not match {num_classes} classes"
            )
        return head

    def grid(self, features: np.ndarray, cls: int) -> np.ndarray:
        """The map of class ``cls`` over one image's (channels, h, w) features, scaled to [0, 1] (0: no evidence)."""
        if features.ndim != 3 or features.shape[0] != self.weight.shape[1]:
            raise RequestError(
                500, "explanation failed", f"the feature map {features.shape} does not fit the head {self.weight.shape}"
            )
        if self.norm_weight is not None:  # LayerNorm of the pooled vector, whose mean and spread are constants here
            pooled = features.mean(axis=(1, 2))
            features = (features - pooled.mean()) / np.sqrt(pooled.var() + self.norm_eps)
            features = features * self.norm_weight[:, None, None] + self.norm_bias[:, None, None]
        cam = np.tensordot(self.weight[cls], features, axes=1) + self.bias[cls]
        spread = cam.max() - cam.min()
        return (cam - cam.min()) / spread if spread > 0 else np.zeros_like(cam)


def requested(query: str | None, custom_attributes: str | None) -> str | None:
    """The explanation asked for by ``?explain=`` or the custom attributes header's ``explain=``; None for none."""
    raw = query_or_attribute(query, custom_attributes, "explain")
    if raw in (None, "", "none"):
        return None
    if raw not in EXPLAIN_METHODS:
        raise RequestError(400, "bad explain", f"explain={raw!r}: use {' or '.join(EXPLAIN_METHODS)}.")
    return raw


def crop_box(size: tuple[int, int], spec: ModelSpec) -> tuple[int, int, int, int]:
    """Where the network's centre crop lies in the input picture (left, top, right, bottom), as preprocessing cuts
    it."""
    width, height = size
    scale = min(width, height) / spec.resize
    side = spec.crop * scale
    left, top = (width - side) / 2, (height - side) / 2
    return round(max(left, 0)), round(max(top, 0)), round(min(left + side, width)), round(min(top + side, height))


def colour(grid: np.ndarray) -> np.ndarray:
    """A blue -> green -> yellow -> red heat colour (uint8 RGB) for values in [0, 1]."""
    stops = np.array([[0, 0, 160], [0, 170, 255], [40, 220, 90], [255, 230, 0], [230, 20, 0]], dtype=np.float32)
    position = np.clip(grid, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    mix = (position - low)[..., None]
    return (stops[low] * (1 - mix) + stops[low + 1] * mix).astype(np.uint8)


def bounded(
    picture: Image.Image, box: tuple[int, int, int, int], max_side: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The picture shrunk in place to at most ``max_side`` px on its longer side (SERVE_EXPLAIN_MAX_SIDE), and
    ``box`` scaled with it: an overlay's size, and the response's, no longer grows with the photo's."""
    width, height = picture.size
    if max(width, height) <= max_side:
        return picture, box
    picture.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    sx, sy = picture.size[0] / width, picture.size[1] / height
    left, top, right, bottom = box
    return picture, (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))


def overlay_png(picture: Image.Image, grid: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    """The picture at its own size with the map blended over ``box``, the part the network saw. Drawn in 8 bits
    with PIL, in place (the picture is the caller's to give up): about 4 bytes a pixel of ``box`` beyond the
    picture itself, so a 40-megapixel photo costs what its decoding did, not ten times that."""
    left, top, right, bottom = box
    size = (max(right - left, 1), max(bottom - top, 1))
    heat = Image.fromarray(colour(grid)).resize(size, Image.Resampling.BILINEAR)
    mask = Image.fromarray((np.clip(grid, 0, 1) * 255 * OPACITY).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR
    )
    picture.paste(heat, (left, top), mask)
    del heat, mask
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def network_view(array: np.ndarray, spec: ModelSpec) -> Image.Image:
    """The picture a preprocessed (3, crop, crop) input shows (normalisation undone), for requests sent as arrays."""
    mean, std = np.asarray(spec.mean, np.float32)[:, None, None], np.asarray(spec.std, np.float32)[:, None, None]
    return Image.fromarray((np.clip(array * std + mean, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))


def explanation(
    picture: Image.Image, features: np.ndarray, head: CamHead, cls: int, label: str, box: tuple[int, int, int, int]
) -> dict:
    """One prediction's ``explanation``: the method, the class it explains, the map at the feature map's resolution
    (``grid``, 0..1) and the picture with the map over ``box`` (``overlay_png``, base64)."""
    grid = head.grid(features, cls)
    return {
        "method": "cam",
        "label": label,
        "grid": np.round(grid, 4).tolist(),
        "overlay_png": base64.b64encode(overlay_png(picture, grid, box)).decode(),
    }
