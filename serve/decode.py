"""Request bytes -> the (N, 3, H, W) float32 batch the network takes. Every bad input is a RequestError (4xx).

Images are counted before any of them is decoded: over the per-request cap is a 413, and the count is reserved
with the server's image budget (``reserve``) before the work starts.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from byoc_contract.messages import one_line
from byoc_images import Fit, ImageRefused, ImageTooLarge, open_rgb
from serve.artifact import ModelSpec
from serve.http_common import RequestError
from serve.limits import Deadline
from serve.preprocess import to_input

if TYPE_CHECKING:
    from serve.oip_bodies import InferRequest

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff", "application/x-image")
JSON_TYPES = ("application/json",)
JSONLINES_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")
NPY_TYPES = ("application/x-npy",)
MULTIPART_TYPES = ("multipart/form-data",)
SUPPORTED = IMAGE_TYPES + JSON_TYPES + JSONLINES_TYPES + NPY_TYPES + MULTIPART_TYPES

Fetch = Callable[[str, Deadline], bytes]
Reserve = Callable[[int], None]


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Item:
    """One image of a JSON body before it is decoded: base64 text or a URL, and where it sits in the body."""

    value: object
    where: str
    is_url: bool = False


@dataclass(frozen=True)
class Source:
    """One decoded image's encoded bytes and the size its header announces (width, height)."""

    data: bytes
    size: tuple[int, int]


@dataclass(frozen=True)
class Decoder:
    """Decodes request bodies for one model, within the per-request limits."""

    spec: ModelSpec
    max_pixels: int
    max_images: int
    fetch: Fetch | None = None
    max_urls: int = 0
    max_explain_pixels: int = 40_000_000
    decoding: str = "exact"  # byoc_images.fit: "scaled" or "exact", as the server chose (serve.pipeline.chosen_decode)

    @property
    def fit(self) -> Fit:
        """How every image is decoded: resized to the model's shorter side, as training's eval transform did."""
        return Fit(self.spec.resize, self.spec.interpolation, self.decoding)

    def decode(
        self, body: bytes, content_type: str | None, deadline: Deadline, reserve: Reserve, sources: list | None = None
    ) -> tuple[np.ndarray, bool]:
        """(batch, one result per line?) from a request body of the given content type; with ``sources``, each
        image's encoded bytes and size are appended to it too (for explanations; a preprocessed array has none):
        the bytes, not the decoded pictures, are kept, so a request's pictures never sit in memory all at once."""
        kind = media_type(content_type)
        if not body:
            raise RequestError(400, "empty body", "The request has no body; send an image or a JSON document.")
        if kind in IMAGE_TYPES or kind in MULTIPART_TYPES:
            reserve(1)
            data = multipart_file(body, content_type) if kind in MULTIPART_TYPES else body
            return self.image(data, sources)[None], False
        if kind in NPY_TYPES:
            return self.npy(body, reserve), False
        if kind in JSON_TYPES:
            return self.images(
                json_items(parse_json(body, "the body"), "body", self.check_count), deadline, reserve, sources
            ), False
        if kind in JSONLINES_TYPES:
            lines = [line for line in body.splitlines() if line.strip()]
            if not lines:
                raise RequestError(400, "empty body", "The JSON lines body has no lines.")
            self.check_count(len(lines))
            items = []
            for n, line in enumerate(lines, 1):
                found = json_items(parse_json(line, f"line {n}"), f"line {n}", self.check_count)
                if len(found) != 1:
                    raise RequestError(
                        400, "bad JSON line", f"line {n} holds {len(found)} images; put one image on each line."
                    )
                items += found
            return self.images(items, deadline, reserve, sources), True
        shown = content_type or "none"
        raise RequestError(
            415, "unsupported content type", f"Content-Type {shown!r} is not served; use one of {', '.join(SUPPORTED)}."
        )

    def check_count(self, count: int) -> None:
        if count > self.max_images:
            detail = (
                f"The request holds {count} images; at most {self.max_images} are served per request "
                "(SERVE_MAX_IMAGES_PER_REQUEST). Split it."
            )
            raise RequestError(413, "too many images", detail)

    def images(
        self, items: list[Item], deadline: Deadline, reserve: Reserve, sources: list | None = None
    ) -> np.ndarray:
        """Counts, reserves, then fetches and decodes ``items`` one by one, stopping at the deadline."""
        self.check_count(len(items))
        urls = sum(item.is_url for item in items)
        if urls and self.fetch is None:
            raise RequestError(
                400,
                "image URLs are disabled",
                "The server does not fetch URLs unless SERVE_ALLOW_IMAGE_URLS=true (they let callers reach internal "
                "hosts); send the image bytes, base64-encoded.",
            )
        if urls > self.max_urls:
            raise RequestError(
                413,
                "too many image URLs",
                f"The request holds {urls} image URLs; at most {self.max_urls} are fetched "
                "(SERVE_MAX_IMAGE_URLS_PER_REQUEST).",
            )
        reserve(len(items))
        arrays = []
        for item in items:
            deadline.check()
            data = self.fetch(str(item.value), deadline) if item.is_url else b64(item.value, item.where)
            arrays.append(self.image(data, sources))
        return np.stack(arrays)

    def inference_batch(self, request: InferRequest, deadline: Deadline, reserve: Reserve) -> np.ndarray:
        """The batch of an Open Inference Protocol request: its FP32 tensor, or its encoded images decoded one by
        one."""
        reserve(request.count)
        if request.tensor is not None:
            return request.tensor
        arrays = []
        for data in request.images:
            deadline.check()
            arrays.append(self.image(data))
        return np.stack(arrays)

    def image(self, data: bytes, sources: list | None = None) -> np.ndarray:
        if (
            sources is not None
        ):  # an explained request: its overlays' pixel budget is checked from the headers, before decoding
            size = header_size(data)
            self.check_explain_budget(sum(w * h for w, h in (source.size for source in sources)) + size[0] * size[1])
            sources.append(Source(data, size))
        return to_input(open_picture(data, self.max_pixels, self.fit), self.spec)

    def check_explain_budget(self, pixels: int) -> None:
        if pixels > self.max_explain_pixels:
            raise RequestError(
                413,
                "too many pixels to explain",
                f"The request's images hold over {pixels} pixels; at most {self.max_explain_pixels} are explained per "
                "request (SERVE_MAX_EXPLAIN_PIXELS). Send fewer or smaller images with explain=cam.",
            )

    def npy(self, body: bytes, reserve: Reserve) -> np.ndarray:
        """An already preprocessed float tensor, (3, H, W) or (N, 3, H, W); its header is checked before the data."""
        try:
            stream = io.BytesIO(body)
            version = np.lib.format.read_magic(stream)
            shape, _, dtype = (
                np.lib.format.read_array_header_2_0(stream)
                if version >= (2, 0)
                else np.lib.format.read_array_header_1_0(stream)
            )
        except Exception as exc:
            raise RequestError(
                400, "bad npy", f"The body is not a .npy array ({type(exc).__name__}); write it with numpy.save."
            ) from exc
        if not np.issubdtype(dtype, np.floating):
            raise RequestError(400, "bad npy dtype", f"Expected a float array, got {dtype}.")
        if (
            len(shape) not in (3, 4)
            or tuple(shape[-3:]) != self.spec.input_shape
            or (len(shape) == 4 and shape[0] == 0)
        ):
            raise RequestError(
                400, "bad npy shape", f"Expected (N, {', '.join(map(str, self.spec.input_shape))}), got {tuple(shape)}."
            )
        count = shape[0] if len(shape) == 4 else 1
        self.check_count(count)
        reserve(count)
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:
            raise RequestError(
                400, "bad npy", f"The body is not a complete .npy array ({type(exc).__name__})."
            ) from exc
        if not np.isfinite(array).all():
            raise RequestError(400, "bad npy values", "The array holds NaN or infinite values.")
        return array.reshape(count, *self.spec.input_shape).astype(np.float32, copy=False)


def header_size(data: bytes) -> tuple[int, int]:
    """The (width, height) an image's header announces (nothing decoded); (0, 0) when there is no readable header
    (decoding then refuses it with the reason)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return (0, 0)


def open_picture(data: bytes, max_pixels: int, fit: Fit | None = None):
    """The upright RGB picture in ``data``, decoded as ``fit`` asks (every pixel without it); every way it can fail is a
    4xx."""
    if not data:
        raise RequestError(400, "empty image", "The image is empty; send the bytes of a JPEG, PNG or WebP file.")
    try:
        return open_rgb(data, max_pixels=max_pixels, fit=fit)
    except ImageTooLarge as exc:
        raise RequestError(413, "image too large", f"{exc}; resize the image before sending it.") from exc
    except ImageRefused as exc:
        raise RequestError(400, exc.error, f"{exc}.") from exc
    except Exception as exc:  # PIL raises many types for corrupt or truncated data; its texts can hold memory addresses
        raise RequestError(
            400,
            "cannot decode image",
            f"The image is corrupt, truncated or of an unknown format ({type(exc).__name__}). Send a complete JPEG, "
            "PNG or WebP file.",
        ) from exc


def b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, "bad image field", f"{where} must be a base64 string, got {type(value).__name__}.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, "bad base64", f"{where} is not valid base64 ({exc}).") from exc


def parse_json(text: bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "bad JSON", f"{where} is not valid JSON: {exc}.") from exc
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int conversion limit)
        raise RequestError(
            400, "bad JSON", f"{where} holds a number Python refuses to convert ({one_line(exc, 120)})."
        ) from None
    except RecursionError:
        raise RequestError(
            400, "bad JSON", f'{where} is nested too deeply; send {{"instances": [...]}} of images.'
        ) from None


def json_items(obj: object, where: str, check_count: Callable[[int], None]) -> list[Item]:
    """The images of a JSON document: {"image": b64}, {"b64": b64}, a bare b64 string, {"url": ...}, or
    {"instances": [...]} of those (one level: instances do not nest). ``check_count`` sees the count first."""
    if isinstance(obj, dict) and "instances" in obj:
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(400, "bad instances", f"{where}.instances must be a non-empty list of images.")
        check_count(len(instances))
        return [json_item(item, f"{where}.instances[{i}]") for i, item in enumerate(instances)]
    return [json_item(obj, where)]


def json_item(obj: object, where: str) -> Item:
    if isinstance(obj, str):
        return Item(obj, where)
    if isinstance(obj, dict) and ("image" in obj or "b64" in obj):
        return Item(obj.get("image", obj.get("b64")), f"{where}.image")
    if isinstance(obj, dict) and isinstance(obj.get("url"), str):
        return Item(obj["url"], f"{where}.url", is_url=True)
    raise RequestError(400, "bad JSON body", f'{where} must be {{"image": "<base64>"}} or {{"instances": [...]}}.')


def multipart_file(body: bytes, content_type: str | None) -> bytes:
    """The first file of a multipart/form-data body (the web page's upload)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestError(
            400,
            "bad multipart body",
            "The multipart body has no boundary or parts; send the image as a form file field.",
        )
    try:
        for part in message.iter_parts():
            if part.get_filename() is not None:
                return part.get_payload(decode=True) or b""
    except Exception:  # the email package raises many types for odd headers (filename*=, bad encodings)
        raise RequestError(
            400,
            "bad multipart body",
            'A part\'s headers cannot be read; send the image as a plain form file field (filename="photo.jpg").',
        ) from None
    raise RequestError(400, "no file", "The multipart form has no file field; attach the image as a file.")
