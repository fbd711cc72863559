"""Reading the model artifact (model.json + model.onnx) written by training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from byoc_contract import model_json


class ArtifactError(RuntimeError):
    """The model folder does not hold a usable artifact; the message says what is wrong."""


@dataclass(frozen=True)
class ModelSpec:
    directory: Path
    classes: list[str]
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    onnx_file: Path
    input_name: str
    output_name: str
    architecture: str
    int8_file: Path | None = None  # OpenVINO IR, written by training when it passed the accuracy gate
    temperature: float = 1.0  # temperature scaling fitted by training (model.json "calibration"); 1: none
    threshold: float | None = None  # two classes: the operating point on class 1's probability ("positive")
    cam_file: Path | None = None  # the head's arrays for class activation maps (the ONNX model's second output)
    explain_reason: str = "the artifact was exported without class activation map outputs; train it again to get them"
    info: dict | None = None  # model.json as read, for what the web page shows
    decode: str = "exact"  # how training decoded the images it evaluated on (model.json preprocess.decode)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)


def load_spec(directory: Path) -> ModelSpec:
    """Parse ``model.json`` (``byoc_contract.model_json``); every field serving depends on must be there."""
    path = directory / model_json.FILE
    try:
        described = model_json.read(path)
        info, pre = dict(described.sections), described.preprocess
        int8, explain = described.section("int8"), described.section("explain")
        spec = ModelSpec(
            directory=directory,
            classes=list(described.classes),
            resize=pre.resize,
            crop=pre.crop,
            mean=pre.mean,
            std=pre.std,
            interpolation=pre.interpolation,
            decode=pre.decode,
            onnx_file=directory / plain_name(described.onnx_file),
            input_name=described.onnx_input,
            output_name=described.onnx_output,
            architecture=described.architecture,
            int8_file=directory / plain_name(int8["file"]) if int8.get("shipped") else None,
            temperature=float(described.section("calibration").get("temperature", 1.0)),
            threshold=operating_threshold(info),
            cam_file=directory / plain_name(explain["head"]) if explain.get("available") else None,
            explain_reason=explain.get("reason") or ModelSpec.explain_reason,
            info=info,
        )
    except model_json.DescriptionError as exc:
        raise ArtifactError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a byoc-vision model description ({type(exc).__name__}: {exc}).") from exc
    if not (math.isfinite(spec.temperature) and 0.01 <= spec.temperature <= 100):
        raise ArtifactError(f"{path}: calibration temperature {spec.temperature} is not between 0.01 and 100")
    return spec


def operating_threshold(info: dict) -> float | None:
    """The two-class operating point's threshold on class 1's probability, when training stored one."""
    point = (info.get("calibration") or {}).get("operating_point")
    if point is None or len(info["classes"]) != 2:
        return None
    threshold = float(point["threshold"])
    if not 0 <= threshold <= 1:
        raise ValueError(f"operating point threshold {threshold} is not a probability")
    return threshold


def plain_name(name: str) -> str:
    """A file name inside the model folder (no path: the folder's description cannot point outside it)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name inside the model folder")
    return name


def load_failure(exc: Exception) -> str:
    """What /ping and /v2 tell a client about a model that failed to load: the kind of failure, never a path or
    the runtime's text (those are in the log)."""
    kind = (
        "the model folder or model.json is invalid"
        if isinstance(exc, ArtifactError)
        else f"{type(exc).__name__} while loading"
    )
    return f"The model failed to load ({kind}); the server's log says why. Fix the model folder and restart."
