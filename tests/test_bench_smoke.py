"""`python -m bench all --smoke`: every benchmark runs end to end on tiny inputs and the report is regenerated.

No number is checked (the suite's timings are never asserted); this only proves the suite works.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from PIL import Image

pytestmark = [pytest.mark.container, pytest.mark.slow]

SECTIONS = {
    "input_pipeline.json": "## CPU input pipeline",
    "train_gpu.json": "## GPU training throughput",
    "train_finetune.json": "## Fine-tuning EfficientNet-Lite0",
    "train_scale.json": "## Training cost as the data grows",
    "serve_http.json": "## Serving ResNet-50 over HTTP",
    "bf16_agreement.json": "## bf16 and int8 serving",
    "rules_overhead.json": "## In-job Debugger rules",
    "soak.json": "## Soak: 10 minutes at saturation",
    "http_ceiling.json": "## The HTTP ceiling",
    "explain_cost.json": "## Explanations",
    "memory_burst.json": "## Memory after a burst of large photos",
}


def test_bench_all_smoke_writes_every_result_table_and_plot(tmp_path, serve_image, torch_serve_image, train_image):
    before = {p: p.stat().st_mtime_ns for p in (REPO / "bench" / "results").glob("*.json")}
    env = {**os.environ, "BENCH_OUT": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "bench",
        "all",
        "--smoke",
        "--serve-image",
        serve_image,
        "--torch-serve-image",
        torch_serve_image,
        "--train-image",
        train_image,
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    doc = (tmp_path / "benchmarks.md").read_text()
    for name, heading in SECTIONS.items():
        report = json.loads((tmp_path / "results" / name).read_text())
        assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["torch"]
        assert heading in doc
        plot = tmp_path / "img" / "benchmarks" / name.replace(".json", ".png")
        assert f"](img/benchmarks/{plot.name})" in doc
        with Image.open(plot) as image:
            assert image.width >= 600
    assert "| decoded-image cache (uint8 memmap) |" in doc and "**auto**" in doc
    alone = json.loads((tmp_path / "results" / "serve_http.json").read_text())["ours_inference_alone"]["precisions"]
    assert all(alone[p][f"batch_{n}"]["images_per_sec"] > 0 for p in ("fp32", "bf16", "int8") for n in (1, 16))
    assert "Ours without HTTP" in doc and "| int8 |" in doc  # the serving image timed its runtime alone
    assert "real JPEG, CPU decode" in doc  # the GPU benchmark's code ran (on the CPU, --allow-cpu)
    assert f"Training image `{train_image}`" in doc  # docker run ... train was timed
    assert {
        p: p.stat().st_mtime_ns for p in (REPO / "bench" / "results").glob("*.json")
    } == before  # BENCH_OUT kept the repo's results
    # serve and soak trained the ResNet-50 artifacts; ceiling, explain and burst, with the same flags, reused them
    assert result.stdout.count("earlier in this run is reused") == 3, result.stdout[-3000:]


def test_bench_path_compares_the_serving_image_at_a_commit_with_the_working_tree(tmp_path, serve_image):
    env = {**os.environ, "BENCH_OUT": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "bench",
        "path",
        "--before",
        "HEAD",
        "--image",
        serve_image,
        "--rounds",
        "1",
        "--seconds",
        "1",
        "--jpeg-size",
        "64",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "serve_path.json").read_text())
    assert [run["label"] for run in report["runs"]] == ["before (HEAD)", "after (working tree)"] and report["ratio"] > 0
    assert "## The single request pipeline" in (tmp_path / "benchmarks.md").read_text()


def test_bench_input_on_large_photos_writes_its_section(tmp_path):
    """`python -m bench input --photos large` on a handful of the large real-photo set (no container needed)."""
    import large_photos

    try:
        large_photos.ensure_installed()
    except SystemExit as exc:
        pytest.skip(str(exc))
    env = {**os.environ, "BENCH_OUT": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "bench",
        "input",
        "--photos",
        "large",
        "--images",
        "6",
        "--decode-files",
        "2",
        "--reps",
        "1",
        "--epochs",
        "1",
        "--batch",
        "4",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "large_input.json").read_text())
    assert report["per_image"]["ours_scaled_ms"] > 0 and set(report["cache"]) >= {"exact", "scaled"}
    assert report["cache"]["scaled"]["images"] == 6
    assert "## Real large photos into the model" in (tmp_path / "benchmarks.md").read_text()
