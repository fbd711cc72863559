"""Ours without HTTP: what the serving runtime alone does on the benchmark's artifact, per precision and batch size.

``python -m bench.inference_alone MODEL_DIR`` (run by ``bench serve`` inside our serving image, with the artifact
mounted and the benchmark's code beside it) loads the artifact as the server does (``serve.runtime.load_runtime``,
OpenVINO, every core) in fp32, bf16 and int8 with the near-tie re-check off, and times ``predict`` on batches of 1
and 16 (the server's batch at concurrency 16) after a warm-up. It prints one JSON object. This is the ceiling the
HTTP rows are held to: no end-to-end rate can pass the model's own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from byoc_machine import usable_cores
from serve.artifact import load_spec
from serve.runtime import load_runtime

PRECISIONS = ("fp32", "bf16", "int8")
BATCHES = (1, 16)


def rate(predict, batch: np.ndarray, seconds: float) -> dict:
    """Images/s and the median milliseconds per call of ``predict`` on ``batch``, repeated for about ``seconds``."""
    for _ in range(3):
        predict(batch)
    calls, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        began = time.perf_counter()
        predict(batch)
        calls.append(time.perf_counter() - began)
    return {
        "images_per_sec": round(len(calls) * len(batch) / sum(calls), 1),
        "ms_per_call": round(1000 * float(np.median(calls)), 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the artifact's folder (model.json, model.onnx, model_int8.xml)")
    parser.add_argument("--seconds", type=float, default=8, help="duration of each measurement")
    args = parser.parse_args(argv)
    spec = load_spec(args.model)
    rng = np.random.default_rng(0)
    threads = usable_cores()
    results = {"threads": threads, "precisions": {}}
    for precision in PRECISIONS:
        runtime = load_runtime(spec, "openvino", threads, precision)
        batches = {n: rng.standard_normal((n, *spec.input_shape), dtype=np.float32) for n in BATCHES}
        results["precisions"][precision] = {
            f"batch_{n}": rate(runtime.predict, batch, args.seconds) for n, batch in batches.items()
        }
        print(json.dumps({precision: results["precisions"][precision]}), flush=True)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
