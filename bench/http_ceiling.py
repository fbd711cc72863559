"""``python -m bench ceiling``: what the HTTP, decode, batching and encode path costs per image, against the model.

The same serving image runs twice on the ResNet-50 artifact of ``bench serve`` (quantized: ``--quantize force``):
once as it ships (``SERVE_PRECISION=int8``), once with a ``code/inference.py`` whose ``model_fn`` returns a model that
answers fixed probabilities at once (the rest of the path is ours: decode, dynamic batching, encode). At concurrency
16 the no-op server's images/s bounds what the path allows; its share of the int8 server's per-image time is the cost.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

from bench.machine import describe
from bench.photos import jpeg_photos
from bench.report import save
from bench.serve_http import make_artifact, take_turns, turns_parser

NO_OP = """
from pathlib import Path

import numpy as np

from byoc_contract import model_json


class FixedProbabilities:
    def __init__(self, classes):
        self.row = np.full((1, classes), 1.0 / classes, dtype=np.float32)

    def predict(self, batch):
        return np.repeat(self.row, len(batch), axis=0)


def model_fn(model_dir):
    return FixedProbabilities(len(model_json.read(Path(model_dir)).classes))
"""
LIMIT = 0.2


def main(argv: list[str] | None = None) -> dict:
    parser = turns_parser("python -m bench ceiling", __doc__)
    args = parser.parse_args(argv)
    bodies = [body for body, _ in jpeg_photos(64, args.jpeg_size)]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp), ("--quantize", "force"))
        no_op = Path(tmp) / "no_op"
        shutil.copytree(model, no_op)
        (no_op / "code").mkdir()
        (no_op / "code" / "inference.py").write_text(textwrap.dedent(NO_OP))
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
        servers = {
            "ours, int8": (args.image, model, {"SERVE_PRECISION": "int8"}),
            "ours, no-op model (the path alone)": (args.image, no_op, {}),
        }
        runs = take_turns(servers, bodies, args.concurrency, args.seconds, args.rounds)
    model_rate, path_rate = runs[0]["images_per_sec"]["median"], runs[1]["images_per_sec"]["median"]
    report = {
        "machine": describe(),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "jpeg_px": args.jpeg_size,
        "runs": runs,
        "path_share_of_int8_image_time": round(model_rate / path_rate, 3),
        "limit": LIMIT,
    }
    save("http_ceiling.json", report)
    print(
        f"the path costs {report['path_share_of_int8_image_time']:.1%} of an int8 image's time at concurrency "
        f"{args.concurrency} (limit {LIMIT:.0%})"
    )
    return report


if __name__ == "__main__":
    main()
