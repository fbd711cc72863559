"""The FastAPI server over real HTTP semantics (TestClient) with a real trained artifact."""

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hostile_inputs import BAD, as_format
from PIL import Image

from serve.app import create_app
from serve.artifact import ArtifactError, load_spec
from serve.settings import Settings, SettingsError

fastapi_testclient = pytest.importorskip("fastapi.testclient")


def settings_for(model_dir, **overrides) -> Settings:
    return Settings(**{**vars(Settings.from_env({})), "model_dir": model_dir, "threads": 2, **overrides})


def ready_client(settings: Settings):
    client = fastapi_testclient.TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ping").json()
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def model_dir(trained_run):
    return trained_run[0] / "model"


@pytest.fixture(scope="module")
def int8_model_dir(model_dir, fashion, tmp_path_factory):
    """The trained artifact with an int8 model (``python -m train.quantize --force`` when training shipped none)."""
    folder = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(model_dir, folder)
    if load_spec(folder).int8_file is None:
        done = subprocess.run(
            [sys.executable, "-m", "train.quantize", str(folder), "--data", str(fashion), "--force"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.fixture(scope="module")
def client(model_dir):
    client = ready_client(settings_for(model_dir))
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def photos(fashion):
    """Real test photos: (class name, PNG bytes) pairs, one per class."""
    return [(folder.name, next(folder.iterdir()).read_bytes()) for folder in sorted((fashion / "test").iterdir())]


def assert_prediction(result: dict, classes_k: int = 5):
    assert set(result) == {"label", "probability", "top_k"}
    assert len(result["top_k"]) == classes_k and result["top_k"][0]["label"] == result["label"]
    probabilities = [p["probability"] for p in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


@pytest.mark.parametrize(
    "content_type,fmt",
    [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP"), ("application/x-image", "JPEG")],
)
def test_image_bodies(client, photos, content_type, fmt):
    response = client.post("/invocations", content=as_format(photos[0][1], fmt), headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    (result,) = response.json()["predictions"]
    assert_prediction(result)


def test_json_single_and_instances(client, photos):
    b64 = [base64.b64encode(p).decode() for _, p in photos[:3]]
    single = client.post("/invocations", json={"image": b64[0]})
    assert single.status_code == 200 and len(single.json()["predictions"]) == 1
    several = client.post("/invocations", json={"instances": [b64[0], {"image": b64[1]}, {"b64": b64[2]}]})
    assert several.status_code == 200
    assert len(several.json()["predictions"]) == 3
    assert several.json()["predictions"][0] == single.json()["predictions"][0]


def test_jsonlines_for_batch_transform(client, photos):
    body = "".join(json.dumps({"image": base64.b64encode(p).decode()}) + "\n" for _, p in photos[:4])
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/jsonlines"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/jsonlines"
    lines = response.text.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert_prediction(json.loads(line))


def test_top_k_from_query_and_custom_attributes(client, photos):
    png = {"content": photos[0][1], "headers": {"Content-Type": "image/png"}}
    assert len(client.post("/invocations?top_k=2", **png).json()["predictions"][0]["top_k"]) == 2
    headers = {**png["headers"], "X-Amzn-SageMaker-Custom-Attributes": "trace=1, top_k=3"}
    assert (
        len(client.post("/invocations", content=photos[0][1], headers=headers).json()["predictions"][0]["top_k"]) == 3
    )
    assert len(client.post("/invocations?top_k=99", **png).json()["predictions"][0]["top_k"]) == 10


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_served_prediction_equals_the_training_side_prediction(runtime, model_dir, photos):
    """The same image file: torch model + training's eval transform vs the server's numpy preprocessing + fp32
    runtime."""
    import torch
    from safetensors.torch import load_model

    from byoc_images import open_rgb
    from train.models import build_network
    from train.transforms import Preprocess, eval_transform

    info = json.loads((model_dir / "model.json").read_text())
    pre = info["preprocess"]
    transform = eval_transform(
        Preprocess(pre["resize"], pre["crop"], tuple(pre["mean"]), tuple(pre["std"]), pre["interpolation"])
    )
    net = build_network(info["architecture"], info["num_classes"], "none")
    load_model(net.model, str(model_dir / "weights.safetensors"))
    client = ready_client(settings_for(model_dir, runtime=runtime, precision="fp32"))
    for _, png in photos:
        with torch.no_grad():
            logits = net.model.eval()(transform(open_rgb(png))[None])
            expected = torch.softmax(
                logits / info["calibration"]["temperature"], dim=1
            ).numpy()  # calibrated, as served
        response = client.post(
            "/invocations", content=png, headers={"Content-Type": "image/png", "Accept": "application/x-npy"}
        )
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-npy"
        served = np.load(io.BytesIO(response.content))
        assert np.abs(served - expected).max() < 1e-4
        assert served.argmax() == expected.argmax()
    client.__exit__(None, None, None)


def test_preprocessing_matches_torchvision_on_odd_sizes():
    from serve.artifact import ModelSpec
    from serve.preprocess import to_input
    from train.transforms import Preprocess, eval_transform

    rng = np.random.default_rng(0)
    cases = [
        ((53, 31), 37, 32, "bilinear"),
        ((300, 400), 256, 224, "bicubic"),
        ((20, 20), 24, 28, "bilinear"),
        ((384, 384), 256, 224, "bilinear"),
    ]
    cases += [((640, 427), 256, 224, "bicubic"), ((256, 300), 256, 224, "bilinear"), ((97, 1000), 64, 64, "nearest")]
    for size, resize, crop, interpolation in cases:
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        spec = ModelSpec(
            None,
            [],
            resize,
            crop,
            (0.485, 0.456, 0.406),
            (0.229, 0.224, 0.225),
            interpolation,
            None,
            "input",
            "logits",
            "x",
        )
        expected = eval_transform(Preprocess(resize, crop, spec.mean, spec.std, interpolation))(image).numpy()
        assert np.abs(to_input(image, spec) - expected).max() < 1e-5


@pytest.mark.parametrize("name,body,content_type,status,error", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_get_a_4xx_json_error_and_the_server_keeps_serving(
    client, photos, name, body, content_type, status, error
):
    if body is None:
        body = as_format(photos[0][1], "JPEG")[:150]
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/invocations", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["detail"]
    assert client.post("/invocations", content=photos[0][1], headers={"Content-Type": "image/png"}).status_code == 200


def test_bad_top_k_and_accept(client, photos):
    png = {"content": photos[0][1], "headers": {"Content-Type": "image/png"}}
    assert client.post("/invocations?top_k=zero", **png).json()["error"] == "bad top_k"
    response = client.post(
        "/invocations", content=photos[0][1], headers={"Content-Type": "image/png", "Accept": "text/csv"}
    )
    assert response.status_code == 406 and response.json()["error"] == "unsupported accept type"


def test_payload_limit_answers_413_before_reading_the_body(model_dir, photos):
    client = ready_client(settings_for(model_dir, max_payload_bytes=1000))
    try:
        response = client.post("/invocations", content=b"x" * 5000, headers={"Content-Type": "image/png"})
        assert response.status_code == 413 and response.json()["error"] == "payload too large"

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b"y" * 500

        response = client.post("/invocations", content=chunks(), headers={"Content-Type": "image/png"})
        assert response.status_code == 413
    finally:
        client.__exit__(None, None, None)


def test_multipart_upload(client, photos):
    response = client.post("/invocations", files={"file": ("shoe.png", photos[0][1], "image/png")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json()["predictions"][0])


def failed_ping(settings: Settings) -> dict:
    """The logged reason the model failed to load; /ping, /invocations and /v2 meanwhile answer 503 without paths."""
    client = fastapi_testclient.TestClient(create_app(settings))
    with client:
        deadline = time.monotonic() + 60
        while "failed" not in client.get("/ping").text and time.monotonic() < deadline:
            time.sleep(0.05)
        ping = client.get("/ping")
        assert ping.status_code == 503 and ping.json()["error"] == "model failed to load", ping.text
        response = client.post("/invocations", content=b"x", headers={"Content-Type": "image/png"})
        assert response.status_code == 503 and response.json()["error"] == "not ready"
        for answer in (ping, response, client.get("/v2/health/ready"), client.post("/v2/repository/index")):
            assert str(settings.model_dir) not in answer.text and "the server's log says why" in answer.text, (
                answer.text
            )  # paths stay in the log
        return {"detail": client.app.state.model.cause}  # the log line's reason


def test_ping_is_503_with_the_reason_when_the_model_cannot_load(tmp_path):
    assert "model.json is missing" in failed_ping(settings_for(tmp_path))["detail"]


def test_an_oversized_model_description_is_refused_before_it_is_read(model_dir, tmp_path):
    from byoc_contract.model_json import MAX_BYTES

    hostile = tmp_path / "model"
    shutil.copytree(model_dir, hostile)
    info = json.loads((hostile / "model.json").read_text())
    (hostile / "model.json").write_text(json.dumps({**info, "padding": "x" * MAX_BYTES}))
    assert "more than the 16777216 a model description may be" in failed_ping(settings_for(hostile))["detail"]


HOSTILE_DESCRIPTIONS = {
    "a resize that would cost gigabytes per image": (
        {"preprocess": {"resize": 100_000}},
        "preprocess.resize is 100000",
    ),
    "a crop of 0 px": ({"preprocess": {"crop": 0}}, "preprocess.crop is 0"),
    "a crop that is text": ({"preprocess": {"crop": "224"}}, "preprocess.crop is '224'"),
    "an unknown interpolation": (
        {"preprocess": {"interpolation": "lanczos9"}},
        "preprocess.interpolation is 'lanczos9'",
    ),
    "a zero standard deviation": ({"preprocess": {"std": [0.2, 0, 0.2]}}, "each must be above 0"),
    "two means": ({"preprocess": {"mean": [0.5, 0.5]}}, "three finite numbers"),
    "BGR inputs": ({"preprocess": {"channel_order": "BGR"}}, "only those are supported"),
    "classes that are not a list": ({"classes": "abc"}, "must be a list of class names"),
    "a JSON list": (None, "holds a JSON list"),
}


@pytest.mark.parametrize("case", list(HOSTILE_DESCRIPTIONS), ids=list(HOSTILE_DESCRIPTIONS))
def test_a_hostile_model_description_is_a_503_that_says_which_field(model_dir, tmp_path, case):
    change, expected = HOSTILE_DESCRIPTIONS[case]
    hostile = tmp_path / "model"
    shutil.copytree(model_dir, hostile)
    info = json.loads((hostile / "model.json").read_text())
    if change is None:
        info = [info]
    else:
        info.update(
            {key: {**info[key], **value} if isinstance(value, dict) else value for key, value in change.items()}
        )
    (hostile / "model.json").write_text(json.dumps(info))
    detail = failed_ping(settings_for(hostile))["detail"]
    assert expected in detail and "model.json" in detail, detail


@pytest.mark.parametrize(
    ("damage", "precision"),
    [("model.onnx", "fp32"), ("model_int8.xml", "int8"), ("model_int8.bin", "int8")],
)
@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_corrupt_model_file_is_a_503_that_says_which_and_what_to_do(int8_model_dir, tmp_path, damage, precision, how):
    hostile = tmp_path / "model"
    shutil.copytree(int8_model_dir, hostile)
    target = hostile / damage
    target.write_bytes(
        b"<net>\x00\xff garbage" * 100 if how == "garbage" else target.read_bytes()[: target.stat().st_size // 3]
    )
    detail = failed_ping(settings_for(hostile, precision=precision))["detail"]
    assert "the openvino runtime cannot load or run the model in" in detail and "corrupt, truncated" in detail
    assert "python -m train.quantize" in detail and len(detail) < 1000


@pytest.mark.parametrize("field", [("onnx", "file"), ("int8", "file"), ("explain", "head")])
@pytest.mark.parametrize("target", ["/etc/passwd", "../model.onnx", "sub/model.onnx"])
def test_a_model_description_cannot_point_outside_its_folder(model_dir, tmp_path, field, target):
    hostile = tmp_path / "model"
    shutil.copytree(model_dir, hostile)
    info = json.loads((hostile / "model.json").read_text())
    info.setdefault("int8", {"shipped": True})
    info[field[0]] = {
        **info[field[0]],
        field[1]: target,
        **({"shipped": True} if field[0] == "int8" else {}),
        **({"available": True} if field[0] == "explain" else {}),
    }
    (hostile / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="not a file name inside the model folder"):
        load_spec(hostile)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "six"}, "not a whole number"),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "at least 1"),
        ({"SERVE_RUNTIME": "tensorrt"}, "choose one of openvino, onnxruntime, torch"),
        ({"SERVE_RUNTIME": "onnxruntime", "SERVE_PRECISION": "bf16"}, "bf16 with SERVE_RUNTIME=openvino"),
        ({"SERVE_PRECISION": "int4"}, "use auto or fp32"),
        ({"SERVE_RUNTIME": "onnxruntime", "SERVE_PRECISION": "int8"}, "int8 / bf16 with SERVE_RUNTIME=openvino"),
        ({"SERVE_BF16_RECHECK_MARGIN": "lots"}, "not a number"),
        ({"SERVE_BF16_RECHECK_MARGIN": "2"}, "between 0 and 1"),
    ],
)
def test_settings_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_from_sagemaker_env():
    s = Settings.from_env(
        {"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5"}
    )
    assert (s.port, s.max_payload_bytes, s.timeout_seconds, s.workers) == (9090, 2 * 1024 * 1024, 5, 1)


def test_the_multi_model_backend_port_comes_from_the_pipeline_safe_range():
    """In an inference pipeline the containers share one network: a private port must come from
    SAGEMAKER_SAFE_PORT_RANGE."""
    assert Settings.from_env({}).backend_port == 9080
    assert (
        Settings.from_env({"SAGEMAKER_SAFE_PORT_RANGE": "8100-8200", "SAGEMAKER_BIND_TO_PORT": "8100"}).backend_port
        == 8101
    )
    assert (
        Settings.from_env({"SAGEMAKER_SAFE_PORT_RANGE": "8150-8200", "SAGEMAKER_BIND_TO_PORT": "8080"}).backend_port
        == 8150
    )
    assert (
        Settings.from_env({"SAGEMAKER_SAFE_PORT_RANGE": "8100-8200", "SERVE_MME_BACKEND_PORT": "9999"}).backend_port
        == 9999
    )
    for raw, message in (
        ("8200-8100", "expected LOW-HIGH"),
        ("ports", "expected LOW-HIGH"),
        ("8100-8100", "no port besides"),
    ):
        with pytest.raises(SettingsError, match=message):
            Settings.from_env({"SAGEMAKER_SAFE_PORT_RANGE": raw, "SAGEMAKER_BIND_TO_PORT": "8100"})


def test_metrics_count_requests_batches_and_load_time(model_dir, photos):
    import concurrent.futures

    client = ready_client(settings_for(model_dir, max_batch_delay_ms=50))
    try:
        png = photos[0][1]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        client.post("/invocations", content=png, headers={"Content-Type": "image/png"}).status_code
                    ),
                    range(8),
                )
            )
        assert statuses == [200] * 8
        client.post("/invocations", content=b"", headers={"Content-Type": "image/png"})
        text = client.get("/metrics").text
        assert 'byoc_requests_total{content_type="image/png",status="200"} 8.0' in text
        assert 'byoc_requests_total{content_type="image/png",status="400"} 1.0' in text
        runs = float(next(line for line in text.splitlines() if line.startswith("byoc_batch_images_count")).split()[-1])
        assert 1 <= runs < 8  # concurrent requests shared model runs
        assert (
            float(next(line for line in text.splitlines() if line.startswith("byoc_model_load_seconds")).split()[-1])
            > 0
        )
        assert "byoc_request_seconds_bucket" in text
    finally:
        client.__exit__(None, None, None)


def test_openvino_bf16_keeps_top1_agreement_with_fp32_on_real_photos(model_dir):
    """The default runtime in bf16 (OpenVINO, fp32 re-check of near ties) vs fp32 ONNX Runtime on 1,000 real photos
    (int8: test_quantize.py)."""
    import fashion_mnist
    from PIL import Image

    from serve.artifact import load_spec
    from serve.preprocess import to_input
    from serve.runtime import load_runtime

    spec, defaults = load_spec(model_dir), Settings.from_env({})
    images, _ = fashion_mnist.load("t10k")
    batch = np.stack([to_input(Image.fromarray(image).convert("RGB"), spec) for image in images[:1000]])
    fp32 = load_runtime(spec, "onnxruntime", 2).predict(batch).argmax(1)
    agreement = {}
    for margin in (0.0, defaults.recheck_margin):
        model = load_runtime(spec, defaults.runtime, 2, "bf16", margin)
        top1 = np.concatenate([model.predict(batch[i : i + 16]) for i in range(0, len(batch), 16)]).argmax(1)
        agreement[margin] = float((top1 == fp32).mean())
        print(
            f"{model.name} {model.precision}, re-check margin {margin}: top-1 agreement with fp32 "
            f"{agreement[margin]:.4f}, {model.rechecked} re-checked"
        )
    assert agreement[defaults.recheck_margin] >= 0.99 and agreement[defaults.recheck_margin] >= agreement[0.0]


@pytest.mark.parametrize("form", ["state dict", "TorchScript"])
def test_torch_runtime_serves_state_dicts_and_torchscript_without_onnx(form, model_dir, tmp_path, photos):
    """SERVE_RUNTIME=torch (the torch flavour) gives ONNX Runtime's probabilities from the weights alone."""
    import shutil

    import torch

    from serve.runtime import _architecture

    torch_dir = tmp_path / "model"
    shutil.copytree(model_dir, torch_dir)
    (torch_dir / "model.onnx").unlink()
    if form == "TorchScript":
        from safetensors.torch import load_file

        info = json.loads((torch_dir / "model.json").read_text())
        net = _architecture(info["architecture"], info["num_classes"]).eval()
        net.load_state_dict(load_file(str(torch_dir / "weights.safetensors")))
        torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(torch_dir / "model.pt"))
        (torch_dir / "weights.safetensors").unlink()
    headers = {"Content-Type": "image/png", "Accept": "application/x-npy"}
    onnx_client, torch_client = (
        ready_client(settings_for(model_dir, runtime="onnxruntime", precision="fp32")),
        ready_client(settings_for(torch_dir, runtime="torch", precision="fp32")),
    )
    for _, png in photos:
        expected = np.load(io.BytesIO(onnx_client.post("/invocations", content=png, headers=headers).content))
        served = np.load(io.BytesIO(torch_client.post("/invocations", content=png, headers=headers).content))
        assert np.abs(served - expected).max() < 1e-4
    for client in (onnx_client, torch_client):
        client.__exit__(None, None, None)


def test_stage_timers_count_each_image_in_decode_and_model(model_dir, photos):
    client = ready_client(settings_for(model_dir))
    try:
        body = json.dumps({"instances": [{"image": base64.b64encode(png).decode()} for _, png in photos[:3]]})
        assert (
            client.post("/invocations", content=body, headers={"Content-Type": "application/json"}).status_code == 200
        )
        assert (
            client.post("/invocations", content=photos[0][1], headers={"Content-Type": "image/png"}).status_code == 200
        )
        text = client.get("/metrics").text
        for stage in ("decode", "model"):
            assert f'byoc_stage_seconds_per_image_count{{stage="{stage}"}} 4.0' in text, text
            assert (
                float(
                    next(
                        line
                        for line in text.splitlines()
                        if line.startswith(f'byoc_stage_seconds_per_image_sum{{stage="{stage}"}}')
                    ).split()[-1]
                )
                > 0
            )
    finally:
        client.__exit__(None, None, None)


def test_the_server_decodes_as_model_json_says_unless_serve_decode_says_otherwise(model_dir, tmp_path):
    """A trained artifact records scaled decoding; one of before (no "decode") is served exactly, as it was evaluated;
    SERVE_DECODE wins either way, and GET /model says what was chosen."""
    large = next(iter(sorted(Path("/usr/share/wallpapers").glob("*/contents/images/5120x2880.jpg"))), None)
    if large is None:
        pytest.skip("no large photo: apt-get install plasma-workspace-wallpapers")
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    info = {**json.loads((old / "model.json").read_text()), "format_version": 1}  # from before scaled decoding
    del info["preprocess"]["decode"]
    (old / "model.json").write_text(json.dumps(info))
    answers = {}
    for folder, setting, serving, training in (
        (model_dir, "auto", "scaled", "scaled"),
        (old, "auto", "exact", "exact"),
        (model_dir, "exact", "exact", "scaled"),
        (old, "scaled", "scaled", "exact"),
    ):
        client = ready_client(settings_for(folder, decode=setting))
        try:
            assert client.get("/model").json()["decode"] == {"serving": serving, "training": training}
            response = client.post(
                "/invocations",
                content=large.read_bytes(),
                headers={"Content-Type": "image/jpeg", "Accept": "application/x-npy"},
            )
            assert response.status_code == 200, response.text
            answers[(folder.name, setting)] = np.load(io.BytesIO(response.content))
        finally:
            client.__exit__(None, None, None)
    assert np.array_equal(answers[("model", "exact")], answers[("old", "auto")])
    assert np.array_equal(answers[("model", "auto")], answers[("old", "scaled")])
    assert (
        np.abs(answers[("model", "auto")] - answers[("model", "exact")]).max() < 0.05
    )  # the same picture, decoded two ways
    with pytest.raises(SettingsError, match="SERVE_DECODE='fast'"):
        Settings.from_env({"SERVE_DECODE": "fast"})
    info["preprocess"]["decode"] = "lossy"
    (old / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match=r"preprocess.decode is 'lossy'"):
        load_spec(old)


V1 = Path(__file__).parent / "data" / "model-json-v1.json"  # written by the trainer at 3f79de4 (format_version 1)


def test_an_artifact_of_the_previous_version_still_serves(model_dir, tmp_path, fashion):
    """A version-1 model.json as the trainer wrote it before the schema module (same data and flags as trained_run,
    so its classes and preprocessing fit this run's model.onnx)."""
    from byoc_contract import model_json

    old = tmp_path / "v1"
    shutil.copytree(model_dir, old)
    shutil.copy(V1, old / "model.json")
    assert model_json.read(old).version == 1 and model_json.read(model_dir).version == model_json.VERSION == 2
    client = ready_client(settings_for(old))
    try:
        described = client.get("/model").json()
        assert described["decode"] == {"serving": "scaled", "training": "scaled"} and described["explanations"]
        photo = next((fashion / "test").rglob("*.png")).read_bytes()
        answer = client.post("/invocations", content=photo, headers={"Content-Type": "image/png"})
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in described["classes"]
    finally:
        client.__exit__(None, None, None)
    updated = model_json.update(old, int8={"shipped": False, "reason": "test"})  # as train.quantize does
    assert updated.version == 2 and json.loads((old / "model.json").read_text())["format_version"] == 2


def test_a_newer_model_json_version_is_refused_with_what_to_do(model_dir, tmp_path):
    newer = tmp_path / "v99"
    shutil.copytree(model_dir, newer)
    info = json.loads((newer / "model.json").read_text())
    (newer / "model.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"format_version 99, newer than this code reads \(1, 2\): serve it with"):
        load_spec(newer)
    del info["preprocess"]["decode"]  # version 2 always says how training decoded
    (newer / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match=r"format_version 2 needs preprocess.decode"):
        load_spec(newer)


def test_multi_model_server_loads_our_handler_by_its_name(model_dir):
    """MMS's own loader, given ``serve.mms_service:handle``: the function entry point, not "the one class" it finds."""
    from mms.model_loader import MmsModelLoader

    from serve import mms_service

    assert mms_service.ENTRY_POINT == "serve.mms_service:handle"
    assert mms_service.SERVICE.transformer is None
    MmsModelLoader().load("fashion", str(model_dir), mms_service.ENTRY_POINT, None, 4)  # calls handle(None, context)
    assert mms_service.SERVICE.transformer is not None, mms_service.SERVICE.error
