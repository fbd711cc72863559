"""Bad and hostile request bodies with the status and error each must get: the tests send them to every front,
and ``python -m bench soak`` mixes them into its load."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image


def as_format(png: bytes, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")
    return buffer.getvalue()


def strip() -> bytes:
    """2 x 40,000 px, 80,000 pixels in all: resized to a 224 px shorter side it would take 3 GB."""
    buffer = io.BytesIO()
    Image.new("L", (2, 40_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def scan_bomb(side: int = 1000, scans: int = 2000) -> bytes:
    """A progressive JPEG whose last scan is repeated ``scans`` times: each is one more pass over every pixel when
    decoded (4,000 px square, 1,000 scans: 125 kB that take 10 s)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 60, 200)).save(buffer, format="JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last = data[data.rindex(b"\xff\xda") : -2]  # the last start-of-scan marker up to the end-of-image one
    return data[:-2] + last * scans + b"\xff\xd9"


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# (name, body or None for "a truncated JPEG of a real photo", content type, status, error)
BAD = [
    ("empty body", b"", "image/jpeg", 400, "empty body"),
    ("truncated jpeg", None, "image/jpeg", 400, "cannot decode image"),
    ("not an image", b"hello", "image/png", 400, "cannot decode image"),
    ("decompression bomb", bomb(), "image/png", 413, "image too large"),
    ("a 1:20,000 strip", strip(), "image/png", 400, "image too elongated"),
    ("a JPEG of 2,000 scans", scan_bomb(), "image/jpeg", 400, "too many JPEG scans"),
    ("wrong content type", b"abc", "text/plain", 415, "unsupported content type"),
    ("missing content type", b"abc", None, 415, "unsupported content type"),
    ("bad base64", json.dumps({"image": "%%%"}).encode(), "application/json", 400, "bad base64"),
    ("bad json", b"{not json", "application/json", 400, "bad JSON"),
    ("json without image", b'{"picture": 1}', "application/json", 400, "bad JSON body"),
    (
        "image url",
        b'{"url": "http://169.254.169.254/latest/meta-data"}',
        "application/json",
        400,
        "image URLs are disabled",
    ),
    ("npy wrong shape", npy(np.zeros((1, 3, 8, 8), np.float32)), "application/x-npy", 400, "bad npy shape"),
    ("npy wrong dtype", npy(np.zeros((1, 3, 32, 32), np.int64)), "application/x-npy", 400, "bad npy dtype"),
    ("npy nan", npy(np.full((1, 3, 32, 32), np.nan, np.float32)), "application/x-npy", 400, "bad npy values"),
    ("npy pickle", b"\x93NUMPY garbage", "application/x-npy", 400, "bad npy"),
    ("jsonlines with two images", b'{"instances": ["aGk=", "aGk="]}\n', "application/jsonlines", 400, "bad JSON line"),
    ("deeply nested json", b"[" * 200_000, "application/json", 400, "bad JSON"),
    (
        "nested instances",
        json.dumps({"instances": [{"instances": ["aGk="]}]}).encode(),
        "application/json",
        400,
        "bad JSON body",
    ),
    (
        "60,000 tiny images",
        json.dumps({"instances": [base64.b64encode(b"\x89PNG\r\n").decode()] * 60_000}).encode(),
        "application/json",
        413,
        "too many images",
    ),
    (
        "multipart without a file",
        b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--\r\n",
        "multipart/form-data; boundary=b",
        400,
        "no file",
    ),
]
