"""Class activation maps without torch: the export's second output and head, ``?explain=cam`` on every front, the
overlay, and the clear 4xx for networks without a pooled linear head. Real training runs."""

import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import run_trainer
from PIL import Image, ImageDraw
from test_serve import ready_client, settings_for

from serve import explain

SIDE = 128


def shapes(root, per_class: int, seed: int) -> None:
    """Two classes of white shapes (squares, discs) at random places on black: where the object is, is known."""
    rng = random.Random(seed)
    for label in ("disc", "square"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (SIDE, SIDE))
            size = rng.randint(24, 40)
            x, y = rng.randint(0, SIDE - size), rng.randint(0, SIDE - size)
            (ImageDraw.Draw(image).ellipse if label == "disc" else ImageDraw.Draw(image).rectangle)(
                [x, y, x + size, y + size], fill="white"
            )
            image.save(root / label / f"{i:03d}.png")


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    """ResNet-18 trained to tell squares from discs at 128 px (its feature map: 4 x 4)."""
    base = tmp_path_factory.mktemp("shapes")
    for split, count, seed in (("train", 80, 0), ("valid", 20, 1), ("test", 20, 2)):
        shapes(base / "data" / split, count, seed)
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        str(SIDE),
        "--resize-size",
        str(SIDE),
        "--epochs",
        "4",
        "--lr",
        "0.003",
        "--workers",
        "0",
        "--augment",
        "none",
        "--quantize",
        "off",
        "--profiler-interval",
        "0",
        "--debugger-rules",
        "none",
    ]
    args += [a for split in ("train", "valid", "test") for a in (f"--{split}", str(base / "data" / split))]
    result = run_trainer(args, base / "opt_ml")
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "opt_ml" / "model"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_artifact_carries_the_feature_map_and_the_head(shapes_model):
    info = json.loads((shapes_model / "model.json").read_text())
    assert info["explain"] == {"available": True, "method": "cam", "output": "features", "head": "cam_head.npz"}
    with np.load(shapes_model / "cam_head.npz", allow_pickle=False) as head:
        assert head["weight"].shape == (2, 512) and head["bias"].shape == (2,)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_map_of_an_object_in_one_corner_peaks_in_that_corner(shapes_model, runtime):
    client = ready_client(settings_for(shapes_model, runtime=runtime))
    try:
        for corner, (x, y) in {"top-left": (4, 4), "bottom-right": (SIDE - 40, SIDE - 40)}.items():
            image = Image.new("RGB", (SIDE, SIDE))
            ImageDraw.Draw(image).rectangle([x, y, x + 34, y + 34], fill="white")
            answer = client.post("/invocations?explain=cam", content=png(image), headers={"Content-Type": "image/png"})
            assert answer.status_code == 200, answer.text
            prediction = answer.json()["predictions"][0]
            explanation = prediction["explanation"]
            grid = np.array(explanation["grid"])
            assert (
                grid.shape == (4, 4) and explanation["label"] == prediction["label"] and explanation["method"] == "cam"
            )
            row, col = np.unravel_index(grid.argmax(), grid.shape)
            assert (row < 2 and col < 2) if corner == "top-left" else (row >= 2 and col >= 2), (corner, grid)
            overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
            assert overlay.size == image.size and overlay.mode == "RGB"
    finally:
        client.__exit__(None, None, None)


def test_explanations_by_custom_attribute_for_json_and_arrays_at_the_input_size(shapes_model):
    client = ready_client(settings_for(shapes_model))
    try:
        wide = Image.new("RGB", (300, 200))
        ImageDraw.Draw(wide).rectangle([140, 90, 170, 120], fill="white")
        body = json.dumps({"instances": [base64.b64encode(png(wide)).decode()] * 2}).encode()
        answer = client.post(
            "/invocations",
            content=body,
            headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "top_k=1, explain=cam"},
        )
        predictions = answer.json()["predictions"]
        assert len(predictions) == 2 and all(
            Image.open(io.BytesIO(base64.b64decode(p["explanation"]["overlay_png"]))).size == (300, 200)
            for p in predictions
        )
        plain = client.post("/invocations", content=png(wide), headers={"Content-Type": "image/png"}).json()[
            "predictions"
        ][0]
        assert "explanation" not in plain and plain["top_k"][0]["probability"] == pytest.approx(
            predictions[0]["probability"], abs=1e-5
        )
        assert (
            client.post(
                "/invocations?explain=shap", content=png(wide), headers={"Content-Type": "image/png"}
            ).status_code
            == 400
        )
        npy = client.post(
            "/invocations?explain=cam",
            content=png(wide),
            headers={"Content-Type": "image/png", "Accept": "application/x-npy"},
        )
        assert npy.status_code == 406 and npy.json()["error"] == "explanations are JSON"
        described = client.get("/model").json()
        assert (
            described["architecture"] == "resnet18"
            and described["explanations"]
            and described["calibration"]["ece_after"] >= 0
        )
        assert described["explain_reason"] is None  # the demo once said "does not compute them" beside true
    finally:
        client.__exit__(None, None, None)


def test_a_network_without_a_pooled_linear_head_answers_explain_with_a_clear_4xx(tmp_path, fashion):
    args = [
        "--model",
        "mobilenet_v3_small",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--quantize",
        "off",
        "--profiler-interval",
        "0",
        "--debugger-rules",
        "none",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
    ]
    result = run_trainer(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["explain"]["available"] is False and "mobilenet_v3_small" in info["explain"]["reason"]
    client = ready_client(settings_for(tmp_path / "model"))
    try:
        photo = next((fashion / "test" / "Bag").iterdir()).read_bytes()
        answer = client.post("/invocations?explain=cam", content=photo, headers={"Content-Type": "image/png"})
        assert answer.status_code == 422 and answer.json()["error"] == "explanations not available"
        assert "global-average-pool + linear head" in answer.json()["detail"]
        assert client.post("/invocations", content=photo, headers={"Content-Type": "image/png"}).status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_the_overlay_blends_the_map_over_the_network_s_crop_only():
    picture = Image.new("RGB", (300, 200), (100, 100, 100))
    box = (50, 0, 250, 200)
    hot = np.ones((4, 4), np.float32)  # the whole crop at the top of the scale: red at OPACITY
    drawn = np.asarray(Image.open(io.BytesIO(explain.overlay_png(picture.copy(), hot, box))))
    assert drawn.shape == (200, 300, 3)
    assert (drawn[:, :50] == 100).all() and (drawn[:, 250:] == 100).all()  # outside the crop: untouched
    red = np.array(explain.colour(np.ones(1))[0], np.float32)
    expected = np.round(100 * (1 - explain.OPACITY) + red * explain.OPACITY)
    assert np.abs(drawn[:, 50:250].astype(np.float32) - expected).max() <= 1
    cold = np.asarray(Image.open(io.BytesIO(explain.overlay_png(picture.copy(), np.zeros((4, 4), np.float32), box))))
    assert (cold == 100).all()  # a map at zero leaves the picture as it was


def test_explain_requests_are_bounded_by_the_pixels_their_overlays_would_hold(shapes_model):
    client = ready_client(settings_for(shapes_model, max_explain_pixels=300 * 200))
    try:
        one = png(Image.new("RGB", (300, 200)))
        body = json.dumps({"instances": [base64.b64encode(one).decode()] * 2}).encode()
        refused = client.post("/invocations?explain=cam", content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 413 and refused.json()["error"] == "too many pixels to explain"
        assert "SERVE_MAX_EXPLAIN_PIXELS" in refused.json()["detail"]
        assert (
            client.post("/invocations", content=body, headers={"Content-Type": "application/json"}).status_code == 200
        )  # no overlay: no bound
        alone = client.post("/invocations?explain=cam", content=one, headers={"Content-Type": "image/png"})
        assert alone.status_code == 200 and "overlay_png" in alone.json()["predictions"][0]["explanation"]
    finally:
        client.__exit__(None, None, None)


WALLPAPERS = Path("/usr/share/wallpapers")


def large_photo() -> bytes:
    """A real 14.7 MP photograph (Debian's plasma-workspace-wallpapers, which .ci/run installs)."""
    found = sorted(WALLPAPERS.glob("*/contents/images/5120x2880.jpg"))
    if not found:
        pytest.skip("no large photo: apt-get install plasma-workspace-wallpapers")
    return found[0].read_bytes()


def test_overlays_of_large_photos_are_drawn_at_a_bounded_size(shapes_model):
    """A 14.7 MP JPEG's overlay is at most SERVE_EXPLAIN_MAX_SIDE px long (it was drawn full size: a 27 MB PNG)."""
    photo = large_photo()
    client = ready_client(settings_for(shapes_model))
    try:
        answer = client.post("/invocations?explain=cam", content=photo, headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        overlay = Image.open(
            io.BytesIO(base64.b64decode(answer.json()["predictions"][0]["explanation"]["overlay_png"]))
        )
        assert (
            overlay.size == (1024, 576) and len(answer.content) < 6 * 1024 * 1024
        )  # SageMaker's real-time response limit
    finally:
        client.__exit__(None, None, None)
    small = ready_client(settings_for(shapes_model, explain_max_side=256))
    try:
        answer = small.post("/invocations?explain=cam", content=photo, headers={"Content-Type": "image/jpeg"})
        assert Image.open(
            io.BytesIO(base64.b64decode(answer.json()["predictions"][0]["explanation"]["overlay_png"]))
        ).size == (256, 144)
    finally:
        small.__exit__(None, None, None)


def test_the_explain_budget_is_checked_from_the_headers_before_decoding(shapes_model):
    """A JPEG whose header announces 2 MP and whose data stops after it is refused by the budget (413), not decoded."""
    header_only = large_photo()[:4096]  # the header says 5120 x 2880; the scan is cut short
    client = ready_client(settings_for(shapes_model, max_explain_pixels=1_000_000))
    try:
        refused = client.post("/invocations?explain=cam", content=header_only, headers={"Content-Type": "image/jpeg"})
        assert refused.status_code == 413 and refused.json()["error"] == "too many pixels to explain", refused.text
    finally:
        client.__exit__(None, None, None)
