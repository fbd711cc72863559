"""Running the artifact's model: OpenVINO or ONNX Runtime on model.onnx (no torch), or torch in the torch flavour.

Every runtime's ``predict`` takes a preprocessed float32 NCHW batch and returns class probabilities.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

import byoc_openvino
from byoc_contract import recheck
from byoc_machine import cpu_flags
from serve.artifact import ArtifactError, ModelSpec

log = logging.getLogger(__name__)
EXPLAIN_OUTPUT = "features"  # the second output of an artifact exported with class activation maps (train.cam)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Runtime(ABC):
    """What the server needs of a runtime: ``logits`` for a batch; ``predict`` and ``warm_up`` come with it."""

    name = "runtime"
    precision = "fp32"
    load_seconds = 0.0
    explains = False  # computes class activation maps (explain_batch)
    temperature = 1.0  # the artifact's calibration (load_runtime sets it): probabilities are softmax(logits / T)

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @abstractmethod
    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw class scores for a float32 NCHW batch."""

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature if self.temperature != 1.0 else logits)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities(self.logits(batch))

    def explain_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, the last feature maps) for a batch, from the model's second output."""
        raise ArtifactError(
            f"the {self.name} runtime does not compute explanations; use SERVE_RUNTIME=openvino or onnxruntime"
        )

    def warm_up(self) -> None:
        self.predict(np.zeros((1, *self.spec.input_shape), dtype=np.float32))


def model_file(spec: ModelSpec, runtime: str) -> Path:
    """The file runtime ``runtime`` loads from the artifact; ArtifactError when the folder lacks it."""
    if runtime == "torch":
        for name in ("model.pt", "weights.safetensors"):
            if (spec.directory / name).is_file():
                return spec.directory / name
        raise ArtifactError(
            f"{spec.directory} has neither model.pt (TorchScript) nor weights.safetensors for the torch runtime."
        )
    if not spec.onnx_file.is_file():
        raise ArtifactError(
            f"{spec.onnx_file} is missing from the model folder; the {spec.architecture} artifact has no ONNX model."
        )
    return spec.onnx_file


class OnnxRuntimeModel(Runtime):
    """model.onnx in an ONNX Runtime session (fp32; the portable choice)."""

    name = "onnxruntime"
    explains = True

    def __init__(self, spec: ModelSpec, threads: int, precision: str = "fp32", recheck_margin: float = 0.0):
        import onnxruntime as ort

        super().__init__(spec)
        ort.disable_telemetry_events()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_file(spec, self.name)), options, providers=["CPUExecutionProvider"]
        )

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.spec.output_name], {self.spec.input_name: batch})[0]

    def explain_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run([self.spec.output_name, EXPLAIN_OUTPUT], {self.spec.input_name: batch})
        return self.probabilities(logits), features


class OpenVinoModel(Runtime):
    """model.onnx compiled by OpenVINO for the CPU in ``fp32`` or ``bf16`` (where the CPU has bf16 kernels), or the
    artifact's INT8 model (``model_int8.xml``, quantized by training past its accuracy gate) in ``int8`` (the layers
    left unquantized in ``byoc_openvino.UNQUANTIZED_PRECISION``).

    bf16 and int8 round activations, which can swap the top two classes when they are nearly tied. With
    ``recheck_margin`` > 0, images whose top-1/top-2 probability gap is below it run again in fp32, so top-1
    labels stay fp32's."""

    name = "openvino"
    explains = True

    def __init__(self, spec: ModelSpec, threads: int, precision: str = "auto", recheck_margin: float = 0.0):
        import openvino as ov

        super().__init__(spec)
        core, onnx = ov.Core(), str(model_file(spec, self.name))
        precision = choose_precision(spec, precision, cpu_flags())
        self.lock = threading.Lock()  # one infer request per model; the batcher already runs one batch at a time
        # requests without an explanation run the network with its logits as the only output (the feature map is
        # not copied out); the whole model is compiled for the first explanation asked for
        served, hint = (
            (str(spec.int8_file), byoc_openvino.UNQUANTIZED_PRECISION) if precision == "int8" else (onnx, precision)
        )
        self.request, granted = _openvino_request(core, logits_only(core, served), threads, hint)
        if precision != "int8" and granted != precision:
            log.warning("this CPU has no %s kernels; OpenVINO runs in %s", precision, granted)
        self.precision = "int8" if precision == "int8" else granted
        self.recheck_margin = recheck_margin if self.precision != "fp32" else 0.0
        self.fp32_request = (
            _openvino_request(core, logits_only(core, onnx), threads, "fp32")[0] if self.recheck_margin > 0 else None
        )
        gate = (spec.info or {}).get("int8") or {}
        if self.precision == "int8" and gate.get("rechecked", 0.0) > recheck.SLOW_SHARE:
            log.warning(
                "the int8 model's accuracy gate re-ran %.1f%% of its images in fp32 (near ties): int8 may serve "
                "slower than bf16 here;"
                " compare with SERVE_PRECISION=bf16",
                100 * gate["rechecked"],
            )
        if self.precision == "int8" and self.recheck_margin < gate.get("recheck_margin", 0.0):
            alone = gate.get("agreement_int8_alone")
            log.warning(
                "the int8 model's accuracy gate measured it with near ties re-checked at margin %s; "
                "SERVE_BF16_RECHECK_MARGIN=%s re-checks fewer"
                " (int8 alone agreed with fp32 on %s of the gate's images)",
                gate["recheck_margin"],
                self.recheck_margin,
                "?" if alone is None else f"{alone:.2%}",
            )
        self.rechecked = 0
        self.explain_request, self.compile_whole = None, lambda: _openvino_request(core, served, threads, hint)[0]

    def logits(self, batch: np.ndarray, request=None) -> np.ndarray:
        with self.lock:
            return (request or self.request).infer({0: batch})[0].copy()

    def explain_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            if self.explain_request is None:
                self.explain_request = self.compile_whole()
            outputs = self.explain_request.infer({0: batch})
            logits, features = outputs[0].copy(), outputs[1].copy()
        return self.recheck(batch, self.probabilities(logits)), features

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.recheck(batch, self.probabilities(self.logits(batch)))

    def recheck(self, batch: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Near ties of bf16 or int8 (top-1/top-2 gap below the margin) run again in fp32."""
        if self.fp32_request is None:
            return probabilities
        close = np.flatnonzero(recheck.near_ties(probabilities, self.recheck_margin))
        if len(close):
            probabilities[close] = self.probabilities(
                self.logits(np.ascontiguousarray(batch[close]), self.fp32_request)
            )
            self.rechecked += len(close)
        return probabilities


INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def choose_precision(spec: ModelSpec, asked: str, flags: frozenset[str] | set[str]) -> str:
    """``auto``: int8 when the artifact has an int8 model and the CPU has VNNI or AMX, else bf16 where the CPU has
    bf16 kernels, else fp32. ``int8`` without an int8 model in the artifact is an ArtifactError."""
    if asked == "int8" and spec.int8_file is None:
        raise ArtifactError(
            f"{spec.directory} has no int8 model (train with --quantize, or run python -m train.quantize); use "
            "SERVE_PRECISION=auto or bf16."
        )
    if asked != "auto":
        return asked
    if spec.int8_file is not None and flags & INT8_FLAGS:
        return "int8"
    return "bf16" if flags & BF16_FLAGS else "fp32"


def logits_only(core, path: str):
    """The model at ``path`` with its first output (the logits) as its only one."""
    import openvino as ov

    model = byoc_openvino.read_model(core, path)
    results = model.get_results()
    return model if len(results) == 1 else ov.Model([results[0]], model.get_parameters(), "logits")


def _openvino_request(core, path, threads: int, precision: str) -> tuple[object, str]:
    """An infer request of the model (a path or an ``ov.Model``) compiled for ``precision``, for latency, and the
    precision the CPU actually grants."""
    return byoc_openvino.openvino_request(core, path, precision, "LATENCY", threads)


class TorchModel(Runtime):
    """The torch flavour: ``model.pt`` (TorchScript), else the architecture in model.json with weights.safetensors."""

    name = "torch"

    def __init__(self, spec: ModelSpec, threads: int, precision: str = "fp32", recheck_margin: float = 0.0):
        import torch

        super().__init__(spec)
        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = self._load(spec).to(self.device).eval()

    def _load(self, spec: ModelSpec):
        path = model_file(spec, self.name)
        if path.suffix == ".pt":
            return self.torch.jit.load(str(path), map_location="cpu")
        from safetensors.torch import load_file

        model = _architecture(spec.architecture, len(spec.classes))
        model.load_state_dict(load_file(str(path)))
        return model

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


def _architecture(name: str, num_classes: int):
    """A torchvision model, or ``timm/<name>`` when timm is installed, with a ``num_classes`` head."""
    if name.startswith("timm/"):
        import timm

        return timm.create_model(name[len("timm/") :], num_classes=num_classes)
    import torchvision

    if name not in torchvision.models.list_models():
        raise ArtifactError(
            f"model.json names architecture {name!r}, which torchvision does not have; export the model as "
            "TorchScript (model.pt)."
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


RUNTIMES = {"openvino": OpenVinoModel, "onnxruntime": OnnxRuntimeModel, "torch": TorchModel}


def load_runtime(
    spec: ModelSpec,
    name: str,
    threads: int,
    precision: str = "fp32",
    recheck_margin: float = 0.0,
    calibrated: bool = True,
) -> Runtime:
    """Load ``spec``'s model with runtime ``name`` (a key of RUNTIMES); ``recheck_margin``: see OpenVinoModel;
    ``calibrated``: apply the artifact's temperature (``SERVE_CALIBRATION``)."""
    started = time.perf_counter()
    model = RUNTIMES[name](spec, threads, precision, recheck_margin)
    model.load_seconds = time.perf_counter() - started
    model.temperature = spec.temperature if calibrated else 1.0
    calibration = (
        f", temperature {model.temperature:.3f}"
        if spec.temperature != 1.0 and calibrated
        else " (raw softmax: SERVE_CALIBRATION=off)"
        if spec.temperature != 1.0
        else ""
    )
    log.info(
        "loaded %s (%s, %d classes) with %s %s in %.2f s%s",
        spec.directory,
        spec.architecture,
        len(spec.classes),
        name,
        model.precision,
        model.load_seconds,
        calibration,
    )
    return model
