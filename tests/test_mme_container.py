"""Multi-model endpoints: the serving image with SAGEMAKER_MULTI_MODEL=true (multi-model-server behind our front)."""

import base64
import io
import json
import shutil
import subprocess
import textwrap

import httpx
import numpy as np
import pytest
from hostile_inputs import BAD, as_format
from test_container import wait_for_ping
from test_handler import ACCEPTS, every_body, make_wheel
from test_serve_container import start_server

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def models_root(trained_run, tmp_path_factory):
    """/opt/ml/models as SageMaker lays it out: <name>/model, here a plain, a customised and a broken model."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(trained_run[0] / "model", root / "fashion" / "model")
    shutil.copytree(trained_run[0] / "model", root / "custom" / "model")
    (root / "custom" / "model" / "code").mkdir()
    (root / "custom" / "model" / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            def output_fn(prediction, accept, context):
                model_dir = context.system_properties['model_dir']
                return f"best={int(prediction.argmax())};model_dir={model_dir}", "text/plain"
            """
        )
    )
    (root / "broken" / "model").mkdir(parents=True)
    (root / "broken" / "model" / "model.json").write_text("{}")
    for name, requirements in (("wheels", "byoc_probe==1.0\n"), ("unmet", "this is not a requirement!!\n")):
        shutil.copytree(trained_run[0] / "model", root / name / "model")
        code = root / name / "model" / "code"
        code.mkdir()
        make_wheel(code, "byoc_probe", "1.0", "ANSWER = 42\n")
        (code / "requirements.txt").write_text(requirements)
        (code / "inference.py").write_text(
            "import byoc_probe\n\ndef output_fn(prediction, accept):\n    return f'{byoc_probe.ANSWER}', 'text/plain'\n"
        )
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def mme(serve_image, models_root):
    # fp32, as the single-model server it is compared with: bf16's rounding, scaled by a calibration temperature
    # below 1, would exceed the comparison's 1e-3
    name, port = start_server(
        serve_image, models_root, env=("SAGEMAKER_MULTI_MODEL=true", "SERVE_PRECISION=fp32"), mount="/opt/ml/models"
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client, name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def assert_error(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["detail"]
    return response.json()


def load(client: httpx.Client, name: str) -> httpx.Response:
    return client.post("/models", json={"model_name": name, "url": f"/opt/ml/models/{name}/model"})


def test_load_list_describe_invoke_unload(mme, fashion):
    client, _ = mme
    assert client.get("/models").json()["models"] == []
    assert load(client, "fashion").status_code == 200
    assert_error(load(client, "fashion"), 409, "conflict status")
    assert [m["modelName"] for m in client.get("/models").json()["models"]] == ["fashion"]
    assert client.get("/models/fashion").json()["modelUrl"] == "/opt/ml/models/fashion/model"

    png = next((fashion / "test" / "Sneaker").iterdir()).read_bytes()
    answer = client.post("/models/fashion/invoke", content=png, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200 and len(answer.json()["predictions"][0]["top_k"]) == 5
    npy = client.post(
        "/models/fashion/invoke", content=png, headers={"Content-Type": "image/png", "Accept": "application/x-npy"}
    )
    assert npy.status_code == 200 and npy.headers["content-type"] == "application/x-npy"

    assert client.delete("/models/fashion").status_code == 200
    assert_error(
        client.post("/models/fashion/invoke", content=png, headers={"Content-Type": "image/png"}),
        404,
        "model not found",
    )


def test_bad_requests_get_json_errors_and_the_endpoint_keeps_serving(mme, fashion):
    client, name = mme
    assert_error(
        client.post("/models", content=b'{"model_name": "x"', headers={"Content-Type": "application/json"}),
        400,
        "invalid JSON",
    )
    assert_error(client.post("/models", json={"model_name": "fashion"}), 400, "invalid load request")
    assert_error(
        client.post("/models", json={"model_name": "../etc", "url": "/opt/ml/models/fashion/model"}),
        400,
        "invalid model name",
    )
    assert_error(load(client, "missing"), 404, "model not found")
    assert_error(load(client, "broken"), 422, "invalid model")
    assert_error(client.get("/models/nope"), 404, "model not found")
    assert_error(client.delete("/models/nope"), 404, "model not found")
    assert_error(
        client.post("/models/nope/invoke", content=b"x", headers={"Content-Type": "image/png"}), 404, "model not found"
    )

    assert load(client, "fashion").status_code == 200
    try:
        png = next((fashion / "test" / "Bag").iterdir()).read_bytes()
        for bad, body, content_type, status, error in BAD:
            body = as_format(png, "JPEG")[:150] if body is None else body
            response = client.post(
                "/models/fashion/invoke", content=body, headers={"Content-Type": content_type} if content_type else {}
            )
            assert response.status_code == status and response.json()["error"] == error, (bad, response.text)
        assert (
            client.post("/models/fashion/invoke", content=png, headers={"Content-Type": "image/png"}).status_code == 200
        )
    finally:
        client.delete("/models/fashion")
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    assert "/invoke" in logs.stdout + logs.stderr and '"GET /ping' not in logs.stdout + logs.stderr


def test_user_code_overrides_per_model(mme, fashion):
    answer = invoke_once(mme[0], "custom", next((fashion / "test" / "Coat").iterdir()).read_bytes())
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith("best=") and answer.text.endswith("model_dir=/opt/ml/models/custom/model")


def invoke_once(client: httpx.Client, name: str, png: bytes) -> httpx.Response:
    """Load model ``name``, invoke it with ``png``, unload it."""
    assert load(client, name).status_code == 200
    try:
        return client.post(f"/models/{name}/invoke", content=png, headers={"Content-Type": "image/png"})
    finally:
        client.delete(f"/models/{name}")


def test_invoke_answers_as_invocations_for_every_content_and_accept_type(mme, serve_image, trained_run, fashion):
    """The same artifact behind /models/{name}/invoke (MMS, its batching) and a single-model server's /invocations."""
    client, _ = mme
    png = next((fashion / "test" / "Dress").iterdir()).read_bytes()
    onnx = ("SERVE_RUNTIME=onnxruntime", "SERVE_PRECISION=fp32")
    name, port = start_server(serve_image, trained_run[0] / "model", env=onnx)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as single:
            expected = {
                key: single.post("/invocations", content=body, headers=headers) for key, body, headers in requests(png)
            }
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert load(client, "fashion").status_code == 200
    try:
        for key, body, headers in requests(png):
            got = client.post("/models/fashion/invoke?top_k=2", content=body, headers=headers)
            want = expected[key]
            assert (
                (got.status_code, got.headers["content-type"])
                == (want.status_code, want.headers["content-type"])
                == (200, want.headers["content-type"])
            ), key
            if want.headers["content-type"] == "application/x-npy":
                assert np.abs(np.load(io.BytesIO(got.content)) - np.load(io.BytesIO(want.content))).max() < 1e-3, key
            else:
                assert labels(got) == labels(want) and [len(r["top_k"]) for r in results(got)] == [2] * len(
                    results(want)
                ), key
        form = client.post("/models/fashion/invoke", files={"file": ("dress.png", png, "image/png")})
        assert form.status_code == 200, form.text
        assert form.json()["predictions"][0]["label"] == results(expected["image/png", "*/*"])[0]["label"]
        many = {"instances": [base64.b64encode(png).decode()] * 65}
        assert_error(client.post("/models/fashion/invoke", json=many), 413, "too many images")
    finally:
        client.delete("/models/fashion")


def requests(png: bytes):
    for content_type, body in every_body(png).items():
        for accept in ACCEPTS:
            yield (content_type, accept), body, {"Content-Type": content_type, "Accept": accept}


def results(response: httpx.Response) -> list[dict]:
    if response.headers["content-type"] == "application/jsonlines":
        return [json.loads(line) for line in response.text.splitlines()]
    return response.json()["predictions"]


def labels(response: httpx.Response) -> list[str]:
    return [r["label"] for r in results(response)]


def test_model_folders_must_be_under_opt_ml_models_and_mms_listens_on_loopback_only(mme):
    client, name = mme
    for url in ("/usr/../tmp/x", "/opt/ml/models/../../../etc", "/opt/ml/models", "fashion/model", "/tmp"):
        assert_error(client.post("/models", json={"model_name": "escape", "url": url}), 400, "invalid model url")
    listening = subprocess.run(
        ["docker", "exec", name, "cat", "/proc/net/tcp", "/proc/net/tcp6"], capture_output=True, text=True, check=True
    ).stdout
    backend = [
        line.split()[1]
        for line in listening.splitlines()[1:]
        if line.split()[1].endswith(":2378") and line.split()[3] == "0A"
    ]  # 9080, LISTEN
    assert backend and all(
        address.startswith(("0100007F:", "00000000000000000000000001000000:")) for address in backend
    ), backend


def test_requirements_install_per_model_from_shipped_wheels_and_a_failure_answers_the_load(mme, fashion):
    client, _ = mme
    answer = invoke_once(client, "wheels", next((fashion / "test" / "Coat").iterdir()).read_bytes())
    assert answer.status_code == 200 and answer.text == "42"
    failed = assert_error(load(client, "unmet"), 422, "cannot install requirements")
    assert "requirements.txt" in failed["detail"]
    assert "unmet" not in [m["modelName"] for m in client.get("/models").json()["models"]]


def test_open_inference_protocol_serves_every_loaded_model_under_its_own_name(mme, fashion):
    """Triton's client against the multi-model endpoint: the repository index lists the loaded models, each answers
    metadata and inference under its name, through the same pipeline as /models/{name}/invoke."""
    triton = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    client, _ = mme
    for name in ("fashion", "custom"):
        if client.get(f"/models/{name}").status_code != 200:
            assert load(client, name).status_code == 200
    url = str(client.base_url).removeprefix("http://").rstrip("/")
    with triton.InferenceServerClient(url=url, network_timeout=120) as v2:
        assert v2.is_server_ready() and v2.is_model_ready("fashion") and not v2.is_model_ready("nothing")
        assert {m["name"] for m in v2.get_model_repository_index()} >= {"fashion", "custom"}
        assert v2.get_model_metadata("fashion")["outputs"][0] == {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [-1, 10],
        }
        png = next((fashion / "test" / "Sneaker").iterdir()).read_bytes()
        image = triton.InferInput("image", [2], "BYTES")
        image.set_data_from_numpy(np.array([png, png], dtype=np.object_), binary_data=True)
        result = v2.infer(
            "fashion",
            [image],
            outputs=[
                triton.InferRequestedOutput("probabilities", binary_data=True),
                triton.InferRequestedOutput("labels"),
            ],
        )
        invoked = client.post("/models/fashion/invoke", content=png, headers={"Content-Type": "image/png"}).json()[
            "predictions"
        ][0]
        assert result.as_numpy("labels")[0][0].decode() == invoked["label"]
        assert abs(float(result.as_numpy("probabilities")[0].max()) - invoked["probability"]) < 1e-5
        with pytest.raises(
            InferenceServerException, match="replaces output_fn"
        ):  # its own output_fn: /invocations only
            v2.infer("custom", [image])
        with pytest.raises(InferenceServerException, match="No model 'nothing' is loaded"):
            v2.get_model_metadata("nothing")
