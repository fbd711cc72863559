"""Probabilities -> the response body the client's Accept header asks for."""

from __future__ import annotations

import io
import json

import numpy as np

from serve.decode import media_type
from serve.http_common import RequestError

ACCEPTED = ("application/json", "application/jsonlines", "application/x-npy")


def top_k(probabilities: np.ndarray, classes: list[str], k: int, threshold: float | None = None) -> dict:
    """``{"label", "probability", "top_k": [{"label", "probability"}, ...]}`` for one image; with a two-class
    operating point, ``"positive"``: whether class 1's probability reaches its threshold."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    ranked = [{"label": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
    result = {**ranked[0], "top_k": ranked}
    if threshold is not None:
        result["positive"] = bool(probabilities[1] >= threshold)
    return result


def choose_accept(header: str | None, jsonlines_input: bool) -> str:
    """The first served type in Accept (``*/*`` or none: JSON, or JSON lines for a JSON lines request)."""
    default = "application/jsonlines" if jsonlines_input else "application/json"
    for part in (header or "*/*").split(","):
        kind = media_type(part)
        if kind in ACCEPTED:
            return kind
        if kind in ("*/*", "application/*", ""):
            return default
    raise RequestError(
        406, "unsupported accept type", f"Accept {header!r} cannot be produced; ask for one of {', '.join(ACCEPTED)}."
    )


def encode(
    probabilities: np.ndarray,
    classes: list[str],
    k: int,
    accept: str,
    threshold: float | None = None,
    explanations: list[dict] | None = None,
) -> bytes:
    if accept == "application/x-npy":
        buffer = io.BytesIO()
        np.save(buffer, probabilities.astype(np.float32))
        return buffer.getvalue()
    results = [top_k(row, classes, k, threshold) for row in probabilities]
    for result, explanation in zip(results, explanations or [], strict=False):
        result["explanation"] = explanation
    if accept == "application/jsonlines":
        return "".join(json.dumps(r) + "\n" for r in results).encode()
    return json.dumps({"predictions": results}).encode()


def query_or_attribute(query: str | None, custom_attributes: str | None, name: str) -> str | None:
    """A request option from the query (``?name=``), else from ``X-Amzn-SageMaker-Custom-Attributes: name=value,
    ...``."""
    raw = query
    if raw is None and custom_attributes:
        for item in custom_attributes.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip() == name:
                raw = value.strip()
    return raw


def parse_top_k(query: str | None, custom_attributes: str | None, default: int, num_classes: int) -> int:
    """k from ``?top_k=`` or ``X-Amzn-SageMaker-Custom-Attributes: top_k=3``; capped at the class count."""
    raw = query_or_attribute(query, custom_attributes, "top_k")
    if raw is None:
        return min(default, num_classes)
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise RequestError(400, "bad top_k", f"top_k must be a whole number of at least 1, got {raw!r}.")
    return min(k, num_classes)
