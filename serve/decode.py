"""Request bytes -> the (N, 3, H, W) float32 batch the network takes. Every bad input is a RequestError (4xx)."""
from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable, Iterable

import numpy as np

from byoc_images import ImageTooLarge, open_rgb
from serve.artifact import ModelSpec
from serve.preprocess import to_input

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff", "application/x-image")
JSON_TYPES = ("application/json",)
JSONLINES_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")
NPY_TYPES = ("application/x-npy",)
SUPPORTED = IMAGE_TYPES + JSON_TYPES + JSONLINES_TYPES + NPY_TYPES + ("multipart/form-data",)


class RequestError(Exception):
    """A request the server cannot serve; becomes ``{"error": ..., "detail": ...}`` with ``status``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def decode_image(data: bytes, spec: ModelSpec, max_pixels: int) -> np.ndarray:
    if not data:
        raise RequestError(400, "empty image", "The image is empty; send the bytes of a JPEG, PNG or WebP file.")
    try:
        return to_input(open_rgb(data, max_pixels=max_pixels), spec)
    except ImageTooLarge as exc:
        raise RequestError(413, "image too large", f"{exc}; resize the image before sending it.") from exc
    except Exception as exc:  # PIL raises many types for corrupt or truncated data
        raise RequestError(400, "cannot decode image", f"{type(exc).__name__}: {exc}. Send a complete JPEG, PNG or WebP file.") from exc


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, "bad image field", f"{where} must be a base64 string, got {type(value).__name__}.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, "bad base64", f"{where} is not valid base64 ({exc}).") from exc


Fetch = Callable[[str], bytes]


def _image_fields(obj: object, where: str, fetch: Fetch | None) -> Iterable[bytes]:
    """The images of one JSON object: {"image": b64}, {"b64": b64}, a bare b64 string, {"url": ...} when
    fetching is enabled, or {"instances": [...]} of those."""
    if isinstance(obj, str):
        yield _b64(obj, where)
    elif isinstance(obj, dict) and "instances" in obj:
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(400, "bad instances", f"{where}.instances must be a non-empty list of images.")
        for i, item in enumerate(instances):
            yield from _image_fields(item, f"{where}.instances[{i}]", fetch)
    elif isinstance(obj, dict) and ("image" in obj or "b64" in obj):
        yield _b64(obj.get("image", obj.get("b64")), f"{where}.image")
    elif isinstance(obj, dict) and "url" in obj:
        if fetch is None:
            raise RequestError(
                400, "image URLs are disabled",
                "The server does not fetch URLs unless SERVE_ALLOW_IMAGE_URLS=true (they let callers reach internal hosts); send the image bytes, base64-encoded.",
            )  # fmt: skip
        yield fetch(str(obj["url"]))
    else:
        raise RequestError(400, "bad JSON body", f'{where} must be {{"image": "<base64>"}} or {{"instances": [...]}}.')


def _json(text: bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "bad JSON", f"{where} is not valid JSON: {exc}.") from exc


def decode_npy(body: bytes, spec: ModelSpec) -> np.ndarray:
    """An already preprocessed float tensor, (3, H, W) or (N, 3, H, W)."""
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:
        raise RequestError(400, "bad npy", f"The body is not a .npy array ({exc}); write it with numpy.save.") from exc
    if not np.issubdtype(array.dtype, np.floating):
        raise RequestError(400, "bad npy dtype", f"Expected a float array, got {array.dtype}.")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != spec.input_shape or array.shape[0] == 0:
        raise RequestError(400, "bad npy shape", f"Expected (N, {', '.join(map(str, spec.input_shape))}), got {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise RequestError(400, "bad npy values", "The array holds NaN or infinite values.")
    return array.astype(np.float32, copy=False)


def decode(body: bytes, content_type: str | None, spec: ModelSpec, max_pixels: int, fetch: Fetch | None = None) -> tuple[np.ndarray, bool]:
    """(batch, one result per line?) from a request body of the given content type."""
    kind = media_type(content_type)
    if not body:
        raise RequestError(400, "empty body", "The request has no body; send an image or a JSON document.")
    if kind in IMAGE_TYPES:
        return decode_image(body, spec, max_pixels)[None], False
    if kind in NPY_TYPES:
        return decode_npy(body, spec), False
    if kind in JSON_TYPES:
        images = list(_image_fields(_json(body, "the body"), "body", fetch))
        return np.stack([decode_image(i, spec, max_pixels) for i in images]), False
    if kind in JSONLINES_TYPES:
        lines = [line for line in body.splitlines() if line.strip()]
        arrays = []
        for n, line in enumerate(lines, 1):
            images = list(_image_fields(_json(line, f"line {n}"), f"line {n}", fetch))
            if len(images) != 1:
                raise RequestError(400, "bad JSON line", f"line {n} holds {len(images)} images; put one image on each line.")
            arrays.append(decode_image(images[0], spec, max_pixels))
        if not arrays:
            raise RequestError(400, "empty body", "The JSON lines body has no lines.")
        return np.stack(arrays), True
    shown = content_type or "none"
    raise RequestError(415, "unsupported content type", f"Content-Type {shown!r} is not served; use one of {', '.join(SUPPORTED)}.")
