"""The Open Inference Protocol (KServe V2 REST) bodies, with Triton's binary tensor data extension.

Request body -> ``InferRequest`` (one input tensor, its elements still encoded), and probabilities -> the response
body. Decoding the images and predicting stay in the one request pipeline (``serve.pipeline``); this module only
frames. A body with binary tensors is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the
tensors' raw bytes; a ``BYTES`` element in binary form is a 4-byte little-endian length and its bytes, in JSON form
a base64 string (the image bytes are never valid UTF-8 text).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from serve.artifact import ModelSpec
from serve.decode import b64, parse_json
from serve.http_common import RequestError, whole_number

HEADER_LENGTH = "inference-header-content-length"
IMAGE_INPUT = "image"  # BYTES, shape [N] or [N, 1]: encoded images (JPEG, PNG, WebP, ...)
PROBABILITIES = "probabilities"  # FP32 [N, classes]
LABELS = "labels"  # BYTES [N, k]: the top-k labels, most probable first
OUTPUTS = (PROBABILITIES, LABELS)
MAX_DIMENSIONS = 4


def bad(detail: str) -> RequestError:
    return RequestError(400, "bad inference request", detail)


@dataclass(frozen=True)
class Output:
    """How one output is wanted: in binary form or JSON, and as Triton's classification (the top ``classification``
    entries as ``"score:index:label"`` strings) or as it is."""

    binary: bool = False
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A parsed ``/v2/models/{name}/infer`` body: the one input tensor, and how the outputs are wanted."""

    id: str | None
    input_name: str
    datatype: str
    shape: tuple[int, ...]
    images: list[bytes] = field(default_factory=list)  # BYTES input: the encoded images
    tensor: np.ndarray | None = None  # FP32 input: the preprocessed NCHW batch
    outputs: dict[str, Output] = field(default_factory=dict)
    top_k: str | None = None

    @property
    def count(self) -> int:
        return self.shape[0]


def input_metadata(spec: ModelSpec) -> list[dict]:
    return [
        {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
        {"name": spec.input_name, "datatype": "FP32", "shape": [-1, *spec.input_shape]},
    ]


def output_metadata(spec: ModelSpec) -> list[dict]:
    return [
        {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(spec.classes)]},
        {"name": LABELS, "datatype": "BYTES", "shape": [-1, -1]},
    ]


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) of a request body."""
    if header_length is None:
        return body, b""
    length = whole_number(header_length)
    if length is None or not 0 < length <= len(body):
        raise bad(
            f"Inference-Header-Content-Length {header_length[:40]!r} must be a whole number between 1 and the body's "
            f"{len(body)} bytes."
        )
    return body[:length], body[length:]


def parse_request(body: bytes, header_length: str | None, spec: ModelSpec, check_count) -> InferRequest:
    """The request, checked against the model's inputs; ``check_count`` sees the image count before any element is
    read."""
    header, binary = split_body(body, header_length)
    document = parse_json(header, "the inference request")
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or len(document["inputs"]) != 1:
        raise bad(
            f'Send {{"inputs": [one tensor]}}: {IMAGE_INPUT!r} (BYTES, the encoded images) or {spec.input_name!r} '
            f"(FP32, [N, {', '.join(map(str, spec.input_shape))}])."
        )
    tensor = document["inputs"][0]
    if not isinstance(tensor, dict):
        raise bad("inputs[0] must be an object with name, datatype, shape and data.")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), check_shape(tensor.get("shape"))
    expected = {IMAGE_INPUT: "BYTES", spec.input_name: "FP32"}
    if name not in expected or datatype != expected[name]:
        raise bad(
            f"inputs[0] is {name!r} of {datatype!r}; the model takes {IMAGE_INPUT!r} as BYTES or "
            f"{spec.input_name!r} as FP32."
        )
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or size != len(binary)):
        raise bad(f"binary_data_size {size!r} does not match the {len(binary)} bytes after the JSON header.")
    if size is None and binary:
        raise bad("The body has bytes after the JSON header but the input has no binary_data_size.")
    data = binary if size is not None else tensor.get("data")
    request = {
        "id": request_id(document),
        "input_name": name,
        "datatype": datatype,
        "shape": shape,
        "outputs": outputs_wanted(document),
        "top_k": top_k(document),
    }
    if datatype == "BYTES":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 1:
            raise bad(f"The {IMAGE_INPUT!r} tensor has shape {list(shape)}; send [N] or [N, 1] images.")
        check_count(shape[0])
        return InferRequest(**request, images=byte_elements(data, shape[0]))
    if len(shape) != 4 or tuple(shape[1:]) != spec.input_shape or shape[0] < 1:
        raise bad(
            f"The {spec.input_name!r} tensor has shape {list(shape)}; send [N, "
            f"{', '.join(map(str, spec.input_shape))}]."
        )
    check_count(shape[0])
    return InferRequest(**request, tensor=float_tensor(data, shape))


def check_shape(shape: object) -> tuple[int, ...]:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise bad(f"shape {shape!r} must be a list of 1 to {MAX_DIMENSIONS} non-negative whole numbers.")
    return tuple(shape)


def request_id(document: dict) -> str | None:
    value = document.get("id")
    if value is not None and (not isinstance(value, str) or len(value) > 256):
        raise bad("id must be a string of at most 256 characters.")
    return value


def top_k(document: dict) -> str | None:
    """k from the request's ``parameters.top_k`` (the labels output's own ``parameters.top_k`` wins)."""
    value = (document.get("parameters") or {}).get("top_k") if isinstance(document.get("parameters"), dict) else None
    for output in document.get("outputs") or []:
        if isinstance(output, dict) and output.get("name") == LABELS and isinstance(output.get("parameters"), dict):
            value = output["parameters"].get("top_k", value)
    return None if value is None else str(value)


def outputs_wanted(document: dict) -> dict[str, Output]:
    """Output name -> how it is wanted, for the outputs asked for (all of them when ``outputs`` is absent)."""
    parameters = document.get("parameters") if isinstance(document.get("parameters"), dict) else {}
    default = parameters.get("binary_data_output") is True
    outputs = document.get("outputs")
    if outputs is None:
        return {name: Output(default) for name in OUTPUTS}
    if not isinstance(outputs, list) or not outputs:
        raise bad(f'outputs must be a non-empty list of {{"name": ...}} naming {" or ".join(OUTPUTS)}.')
    wanted = {}
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise bad(f"Unknown output {name!r}; the model answers {', '.join(OUTPUTS)}.")
        own = output.get("parameters") if isinstance(output.get("parameters"), dict) else {}
        classification = own.get("classification", 0)
        if not isinstance(classification, int) or isinstance(classification, bool) or classification < 0:
            raise bad(f"classification {classification!r} of output {name!r} must be a whole number of at least 0.")
        wanted[name] = Output(own.get("binary_data", default) is True, classification)
    return wanted


def byte_elements(data: object, count: int) -> list[bytes]:
    """The ``count`` elements of a BYTES tensor: length-prefixed raw bytes, or a list of base64 strings."""
    if isinstance(data, bytes):
        elements, offset = [], 0
        while offset < len(data) and len(elements) < count:
            if offset + 4 > len(data):
                raise bad("A BYTES element's 4-byte length is cut off.")
            (length,) = struct.unpack_from("<I", data, offset)
            if length > len(data) - offset - 4:
                raise bad(
                    f"BYTES element {len(elements)} declares {length} bytes but only {len(data) - offset - 4} follow."
                )
            elements.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        if len(elements) != count or offset != len(data):
            raise bad(f"The binary BYTES data does not hold exactly the {count} elements its shape says.")
        return elements
    if isinstance(data, list) and len(data) == count and all(isinstance(d, list) and len(d) == 1 for d in data):
        data = [d[0] for d in data]  # [[b64], [b64]] for shape [N, 1]
    if not isinstance(data, list) or len(data) != count:
        raise bad(
            f"data must list the {count} images its shape says, each base64-encoded (or send them as binary data)."
        )
    return [b64(value, f"inputs[0].data[{i}]") for i, value in enumerate(data)]


def float_tensor(data: object, shape: tuple[int, ...]) -> np.ndarray:
    """The FP32 tensor: little-endian raw bytes, or JSON numbers (flat or nested, row-major)."""
    expected = math.prod(shape)
    if isinstance(data, bytes):
        if len(data) != expected * 4:
            raise bad(f"The FP32 tensor of shape {list(shape)} takes {expected * 4} bytes; {len(data)} were sent.")
        array = np.frombuffer(data, dtype="<f4")
    else:
        try:
            array = np.asarray(data, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise bad(f"The FP32 data is not a list of numbers ({exc}).") from None
        if array.size != expected:
            raise bad(f"The FP32 tensor of shape {list(shape)} holds {expected} numbers; {array.size} were sent.")
    if not np.isfinite(array).all():
        raise bad("The FP32 tensor holds NaN or infinite values.")
    return array.astype(np.float32).reshape(shape)


def encode_response(
    probabilities: np.ndarray, classes: list[str], request: InferRequest, model_name: str, k: int
) -> tuple[bytes, str]:
    """(body, media type): JSON, or the JSON header followed by the binary outputs when any is asked in binary."""
    outputs, blobs = [], []
    for name, wanted in request.outputs.items():
        datatype, shape, value = output_tensor(name, wanted, probabilities, classes, k)
        output = {"name": name, "datatype": datatype, "shape": shape}
        if wanted.binary:
            blob = (
                value.tobytes()
                if datatype == "FP32"
                else b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in value)
            )
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = value.reshape(-1).tolist() if datatype == "FP32" else value
        outputs.append(output)
    header = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        header = {"id": request.id, **header}
    text = json.dumps(header).encode()  # ASCII: json.dumps escapes every other character
    return (text + b"".join(blobs), "application/octet-stream") if blobs else (text, "application/json")


def output_tensor(
    name: str, wanted: Output, probabilities: np.ndarray, classes: list[str], k: int
) -> tuple[str, list[int], object]:
    """(datatype, shape, values: a float32 array or a flat list of strings) of one output."""
    count = min(wanted.classification or k, len(classes))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    if wanted.classification:  # Triton's classification extension
        return (
            "BYTES",
            [len(probabilities), count],
            [f"{row[i]:f}:{i}:{classes[i]}" for row, top in zip(probabilities, order, strict=False) for i in top],
        )
    if name == PROBABILITIES:
        return "FP32", list(probabilities.shape), probabilities.astype("<f4")
    return "BYTES", [len(probabilities), count], [classes[i] for top in order for i in top]


def response_headers(body: bytes, media_type: str) -> dict[str, str]:
    """``Inference-Header-Content-Length`` for a binary response: the length of its leading JSON header."""
    if media_type != "application/octet-stream":
        return {}
    _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    return {"Inference-Header-Content-Length": str(end)}


def error_body(exc: RequestError) -> bytes:
    """The protocol's error shape, ``{"error": "<what>: <what to do>"}``."""
    return json.dumps({"error": f"{exc.error}: {exc.detail}"}).encode()
