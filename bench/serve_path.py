"""``python -m bench path --before REF``: what the serving path costs, the image built at git ``REF`` against the
working tree's, in one run: the ResNet-50 artifact of ``bench serve``, 384 px JPEG bodies at concurrency 16, the
two servers taking turns (``--rounds``), images/s and latency for each.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from bench.machine import describe
from bench.photos import REPO, jpeg_photos
from bench.report import save
from bench.serve_http import make_artifact, take_turns


def image_at(ref: str, tag: str) -> str:
    """The serving image built from a clean checkout of git ``ref``."""
    from sagemaker_launch import images

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "worktree", "add", "--detach", tmp, ref], cwd=REPO, check=True, capture_output=True)
        try:
            return images.build("serve", tag, Path(tmp))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=REPO, capture_output=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench path", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before",
        required=True,
        help="git ref of the serving code to compare against (e.g. the commit before a change)",
    )
    parser.add_argument(
        "--image", default=None, help="the working tree's serving image (default: build byoc-vision-serve:bench)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jpeg-size", type=int, default=384)
    args = parser.parse_args(argv)
    from sagemaker_launch import images

    before = image_at(args.before, "bench-before")
    after = args.image or images.build("serve", "bench", REPO)
    bodies = [body for body, _ in jpeg_photos(64, args.jpeg_size)]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp), ("--quantize", "off"))  # both servers run the same bf16 model
        servers = {f"before ({args.before})": (before, model, {}), "after (working tree)": (after, model, {})}
        runs = take_turns(servers, bodies, args.concurrency, args.seconds, args.rounds)
    report = {
        "machine": describe(),
        "before_ref": args.before,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "jpeg_px": args.jpeg_size,
        "runs": runs,
        "ratio": round(runs[1]["images_per_sec"]["median"] / runs[0]["images_per_sec"]["median"], 3),
    }
    save("serve_path.json", report)
    print(f"after/before at concurrency {args.concurrency}: {report['ratio']}x")
    return report


if __name__ == "__main__":
    main()
