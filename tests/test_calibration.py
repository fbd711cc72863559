"""Calibrated probabilities: temperature scaling fitted at the end of training, reported, stored in model.json and
applied by every serving runtime; the two-class operating point. Real training runs on real Fashion-MNIST photos."""

import io
import json
import shutil

import numpy as np
import pytest
from conftest import run_trainer
from PIL import Image
from test_serve import ready_client, settings_for

from serve.artifact import load_spec
from serve.preprocess import to_input
from serve.settings import Settings
from train.calibration import expected_calibration_error, fit_temperature, nll, operating_point, scaled_softmax

FAST = [
    "--model",
    "resnet18",
    "--pretrained",
    "none",
    "--image-size",
    "32",
    "--workers",
    "0",
    "--augment",
    "none",
    "--label-smoothing",
    "0",
    "--quantize",
    "off",
    "--profiler-interval",
    "0.2",
    "--debugger-rules",
    "none",
]


def splits(fashion, classes=None):
    return [
        a
        for split in ("train", "valid", "test")
        for a in (f"--{split}", str(classes[split] if classes else fashion / split))
    ]


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory, fashion):
    """ResNet-18 from scratch, 15 epochs on 40 photos a class, no label smoothing: it overfits and is over-confident."""
    base = tmp_path_factory.mktemp("overconfident")
    result = run_trainer(
        [*FAST, "--epochs", "15", "--lr", "0.003", "--early-stopping-metric", "valid_acc", *splits(fashion)], base
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return base, result


def test_fit_temperature_recovers_a_known_temperature_and_keeps_every_label():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 10)) * 2
    targets = np.array([rng.choice(10, p=p) for p in scaled_softmax(true_logits)])
    sharpened = true_logits * 3  # an over-confident model: its calibrated temperature is 3
    temperature = fit_temperature(sharpened, targets)
    assert abs(temperature - 3) < 0.25
    assert nll(sharpened, targets, temperature) < nll(sharpened, targets)
    assert (scaled_softmax(sharpened, temperature).argmax(1) == sharpened.argmax(1)).all()
    assert expected_calibration_error(scaled_softmax(sharpened, temperature), targets) < expected_calibration_error(
        scaled_softmax(sharpened), targets
    )


def test_operating_point_reaches_the_sensitivity_asked_for():
    rng = np.random.default_rng(1)
    positive = rng.random(500) < 0.2
    score = np.clip(rng.normal(0.3 + 0.4 * positive, 0.15), 0, 1)
    point = operating_point(score, positive, 0.95)
    assert point["sensitivity"] >= 0.95 and (score[positive] >= point["threshold"]).mean() == point["sensitivity"]
    assert (
        operating_point(score, positive, 0.5)["threshold"] > point["threshold"]
    )  # asking less allows a stricter threshold
    with pytest.raises(ValueError, match="no positive image"):
        operating_point(score, np.zeros(500, bool), 0.95)


def test_an_overconfident_model_is_calibrated_on_held_out_data_and_reported(overconfident):
    base, result = overconfident
    final = json.loads((base / "output" / "data" / "metrics.json").read_text())
    metrics, calibration = final["final"], final["calibration"]
    assert metrics["train_acc"] >= metrics["valid_acc"] + 0.1  # it overfits
    assert calibration["temperature"] > 1  # over-confident: the fitted temperature softens it
    assert (
        metrics["test_nll_after"] < metrics["test_nll_before"]
        and metrics["test_ece_after"] < metrics["test_ece_before"]
    )
    assert len(calibration["reliability_before"]) == 15 and calibration["fitted_on"] == "valid"
    assert f"temperature={calibration['temperature']:.4f}" in result.stdout and "test_ece_after=" in result.stdout
    assert (base / "output" / "data" / "reliability_diagram.png").is_file()
    assert Image.open(base / "output" / "data" / "reliability_diagram.png").size[0] > 300
    report = (base / "output" / "data" / "profiler-report.html").read_text()
    assert "Reliability on test" in report and "ECE (15 bins) before / after" in report
    assert (
        json.loads((base / "model" / "model.json").read_text())["calibration"]["temperature"]
        == calibration["temperature"]
    )


def training_side_logits(model_dir, pngs) -> np.ndarray:
    """The network's logits as training computes them: torch, the artifact's weights, the same preprocessing."""
    import torch
    from safetensors.torch import load_file

    from train.models import build_network

    info = json.loads((model_dir / "model.json").read_text())
    net = build_network(info["architecture"], info["num_classes"], "none").model
    net.load_state_dict(load_file(model_dir / "weights.safetensors"))
    spec = load_spec(model_dir)
    batch = np.stack([to_input(Image.open(io.BytesIO(p)).convert("RGB"), spec) for p in pngs])
    with torch.no_grad():
        return net.eval()(torch.from_numpy(batch)).double().numpy()


@pytest.mark.parametrize("runtime, precision", [("onnxruntime", "fp32"), ("openvino", "fp32")])
def test_served_probabilities_are_softmax_of_logits_over_t_for_every_runtime(
    overconfident, fashion, runtime, precision
):
    model_dir = overconfident[0] / "model"
    temperature = load_spec(model_dir).temperature
    pngs = [next(folder.iterdir()).read_bytes() for folder in sorted((fashion / "test").iterdir())]
    expected = scaled_softmax(training_side_logits(model_dir, pngs), temperature)
    raw = scaled_softmax(training_side_logits(model_dir, pngs))
    for calibration, wanted in (("on", expected), ("off", raw)):
        settings = settings_for(model_dir, runtime=runtime, precision=precision, calibrated=calibration == "on")
        client = ready_client(settings)
        try:
            for png, row in zip(pngs, wanted, strict=False):
                answer = client.post(
                    "/invocations", content=png, headers={"Content-Type": "image/png", "Accept": "application/x-npy"}
                )
                assert answer.status_code == 200
                assert np.abs(np.load(io.BytesIO(answer.content))[0] - row).max() < 1e-4
        finally:
            client.__exit__(None, None, None)


def test_serve_calibration_setting_is_validated():
    assert Settings.from_env({"SERVE_CALIBRATION": "off"}).calibrated is False
    with pytest.raises(ValueError, match="SERVE_CALIBRATION='maybe': use on or off"):
        Settings.from_env({"SERVE_CALIBRATION": "maybe"})


def test_two_classes_get_an_operating_point_and_each_prediction_says_positive(tmp_path, fashion):
    classes = {}
    for split in ("train", "valid", "test"):  # a two-class screen: Shirt (0) against T-shirt (1), the hardest pair
        for name in ("Shirt", "T-shirt_top"):
            shutil.copytree(fashion / split / name, tmp_path / "data" / split / name)
        classes[split] = tmp_path / "data" / split
    result = run_trainer(
        [*FAST, "--epochs", "4", "--target-sensitivity", "0.9", *splits(fashion, classes)], tmp_path / "opt_ml"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model_dir = tmp_path / "opt_ml" / "model"
    point = json.loads((model_dir / "model.json").read_text())["calibration"]["operating_point"]
    assert point["target_sensitivity"] == 0.9 and point["sensitivity"] >= 0.9 and 0 <= point["threshold"] <= 1
    client = ready_client(settings_for(model_dir))
    try:
        for png in [p.read_bytes() for p in sorted((classes["test"] / "T-shirt_top").iterdir())]:
            prediction = client.post("/invocations", content=png, headers={"Content-Type": "image/png"}).json()[
                "predictions"
            ][0]
            probability = {p["label"]: p["probability"] for p in prediction["top_k"]}["T-shirt_top"]
            assert prediction["positive"] == (probability >= point["threshold"] - 1e-6)
    finally:
        client.__exit__(None, None, None)
    bad = run_trainer(
        [*FAST, "--epochs", "1", "--target-sensitivity", "1.5", *splits(fashion, classes)], tmp_path / "bad"
    )
    assert (
        bad.returncode != 0
        and "--target-sensitivity: invalid _fraction value" not in bad.stderr
        and "must be between 0 and 1" in bad.stderr
    )
