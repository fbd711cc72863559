"""``python -m bench explain``: what class activation maps cost, and that requests without one pay nothing for them.

The serving image on the ResNet-50 artifact of ``bench serve``, three ways, taking turns: requests without an
explanation on the artifact as training writes it (its ONNX model has the feature map as a second output), the same
requests on a copy whose model has that output removed (what serving cost before explanations existed), and requests
with ``?explain=cam`` (the map and a PNG overlay at the JPEG's size for every image).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.machine import describe
from bench.photos import jpeg_photos
from bench.report import save
from bench.serve_http import make_artifact, take_turns, turns_parser
from byoc_contract import model_json


def without_explanations(model: Path, target: Path) -> Path:
    """A copy of the artifact whose ONNX model answers the logits only, described as having no explanations."""
    import onnx

    shutil.copytree(model, target)
    graph = onnx.load(str(model / "model.onnx"))
    kept = [o for o in graph.graph.output if o.name == "logits"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, str(target / "model.onnx"))
    model_json.update(target, explain={"available": False, "reason": "removed for the benchmark"})
    (target / "cam_head.npz").unlink()
    return target


def main(argv: list[str] | None = None) -> dict:
    parser = turns_parser("python -m bench explain", __doc__)
    args = parser.parse_args(argv)
    bodies = [body for body, _ in jpeg_photos(64, args.jpeg_size)]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp))
        plain = without_explanations(model, Path(tmp) / "plain")
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
        env = {"SERVE_PRECISION": "fp32"}
        servers = {
            "no explanation, model without the feature-map output": (args.image, plain, env),
            "no explanation, model with it (as trained)": (args.image, model, env),
            "explain=cam on every request": (args.image, model, env, "/invocations?explain=cam"),
        }
        runs = take_turns(servers, bodies, args.concurrency, args.seconds, args.rounds)
    without, with_output, explained = (run["images_per_sec"]["median"] for run in runs)
    report = {
        "machine": describe(),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "jpeg_px": args.jpeg_size,
        "runs": runs,
        "plain_with_output_vs_without": round(with_output / without, 3),
        "explained_vs_plain": round(explained / with_output, 3),
    }
    save("explain_cost.json", report)
    print(
        f"plain requests: {report['plain_with_output_vs_without']:.3f}x with the feature-map output; explain=cam: "
        f"{report['explained_vs_plain']:.3f}x the plain rate"
    )
    return report


if __name__ == "__main__":
    main()
