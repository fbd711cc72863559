"""Fetching an image by URL: off unless SERVE_ALLOW_IMAGE_URLS=true, since it lets callers make the server
send requests (to internal hosts and cloud metadata endpoints too)."""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from serve.decode import RequestError


def fetch_image(url: str, max_bytes: int, timeout: float = 5.0) -> bytes:
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise RequestError(400, "bad image URL", f"{url!r}: only http and https URLs are fetched.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RequestError(400, "cannot fetch image URL", f"{url}: {exc}") from exc
    if len(data) > max_bytes:
        raise RequestError(413, "image too large", f"{url} is larger than {max_bytes} bytes.")
    return data
