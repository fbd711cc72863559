"""OpenVINO on the CPU, compiled the same way by training's int8 gate and by the server.

How an int8 model runs, which training's gate must measure exactly as the server serves it: the quantized layers in
int8, the layers quantization leaves out (the stem, the classifier) in bf16 on CPUs with bf16 kernels, else fp32
(ResNet-50, this project's 2-core AVX512-BF16 machine: 4-10 % faster than fp32 there; docs/benchmarks.md)."""

from pathlib import Path

UNQUANTIZED_PRECISION = "bf16"  # asked of OpenVINO as INFERENCE_PRECISION_HINT; CPUs without bf16 fall back to fp32
FRONTENDS = {".onnx": "onnx", ".xml": "ir"}  # the model files an artifact holds, by suffix


def read_model(core, path: str | Path):
    """The model at ``path``, read by OpenVINO's frontend for its suffix. A file that frontend does not recognise is a
    ValueError at once: OpenVINO would try every other frontend on it, and one logs the file's bytes to stderr."""
    from openvino.frontend import FrontEndManager

    kind = FRONTENDS.get(Path(path).suffix)
    if kind is None or not FrontEndManager().load_by_framework(kind).supported(str(path)):
        raise ValueError(f"{path} is not {'an OpenVINO IR' if kind == 'ir' else 'an ONNX'} model")
    return core.read_model(str(path))


def openvino_request(core, model, precision: str, performance: str, threads: int) -> tuple[object, str]:
    """An infer request of ``model`` (a path or an ``ov.Model``) compiled for the CPU with ``precision`` ("bf16" or
    "fp32") as its inference precision hint and OpenVINO's ``performance`` hint, and the precision the CPU granted."""
    config = {
        "INFERENCE_PRECISION_HINT": {"bf16": "bf16", "fp32": "f32"}[precision],
        "PERFORMANCE_HINT": performance,
        "INFERENCE_NUM_THREADS": threads,
    }
    compiled = core.compile_model(model, "CPU", config)
    granted = "bf16" if compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16" else "fp32"
    return compiled.create_infer_request(), granted
