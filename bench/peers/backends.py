"""Which CPU setting is a torch peer's best? Inference-only images/s of ResNet-50 in each ``torch_model`` mode.

``python -m bench.peers.backends`` (in a peer image) times every mode at batch 1 and batch 8 (the peers' server-side
batch) with random weights, after a warm-up that includes compiling, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

from bench.peers import torch_model


def rate(forward, batch: torch.Tensor, seconds: float) -> float:
    """Images/s of ``forward`` on ``batch``, repeated for about ``seconds``."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        forward(batch)
        done += len(batch)
    return round(done / (time.perf_counter() - started), 1)


def time_mode(name: str, mode: str, seconds: float) -> dict:
    """Warm-up seconds (compiling included) and images/s at batch 1 and 8 of a random ``name`` in ``mode``."""
    model = torchvision.models.get_model(name, num_classes=10).eval()
    started = time.perf_counter()
    forward = torch_model.prepare(model, mode)
    for size in (1, 8, 1, 8):  # a compiling mode compiles here, the dynamic-shape graph included
        forward(torch.randn(size, 3, 224, 224))
    warm = round(time.perf_counter() - started, 1)
    return {
        "warm_up_seconds": warm,
        **{f"batch_{n}": rate(forward, torch.randn(n, 3, 224, 224), seconds) for n in (1, 8)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--modes", nargs="+", default=list(torch_model.MODES))
    args = parser.parse_args()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "modes": {}}
    for mode in args.modes:
        try:
            results["modes"][mode] = time_mode(args.model, mode, args.seconds)
        except Exception as exc:
            results["modes"][mode] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
        print(json.dumps({mode: results["modes"][mode]}), flush=True)
    running = [m for m, r in results["modes"].items() if "error" not in r]
    results["best"] = max(running, key=lambda m: results["modes"][m]["batch_8"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
