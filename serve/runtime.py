"""Running the artifact's model.onnx: ONNX Runtime on the CPU, no torch."""
from __future__ import annotations

import logging
import time

import numpy as np

from serve.artifact import ModelSpec

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class OnnxRuntimeModel:
    """model.onnx in an ONNX Runtime session; ``predict`` returns class probabilities."""

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, threads: int):
        import onnxruntime as ort

        ort.disable_telemetry_events()
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.spec = spec
        self.session = ort.InferenceSession(str(spec.onnx_file), options, providers=["CPUExecutionProvider"])
        self.load_seconds = time.perf_counter() - started

    def predict(self, batch: np.ndarray) -> np.ndarray:
        logits = self.session.run([self.spec.output_name], {self.spec.input_name: batch})[0]
        return softmax(logits.astype(np.float32))

    def warm_up(self) -> None:
        self.predict(np.zeros((1, *self.spec.input_shape), dtype=np.float32))


def load_runtime(spec: ModelSpec, name: str, threads: int) -> OnnxRuntimeModel:
    model = {"onnxruntime": OnnxRuntimeModel}[name](spec, threads)
    log.info("loaded %s (%s, %d classes) with %s in %.2f s", spec.onnx_file, spec.architecture, len(spec.classes), name, model.load_seconds)
    return model
