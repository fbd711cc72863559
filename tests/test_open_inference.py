"""The Open Inference Protocol (KServe V2 REST) of the serving container, driven by Triton's own HTTP client
(``tritonclient.http``), as Triton and KServe users would, plus hostile bodies over raw HTTP."""

import base64
import http.client
import io
import json
import struct
import subprocess
import time

import numpy as np
import pytest
from PIL import Image
from test_container import post, wait_for_ping
from test_serve_container import start_server

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from serve.artifact import load_spec  # noqa: E402
from serve.preprocess import to_input  # noqa: E402

pytestmark = pytest.mark.container
NAME = "fashion"


@pytest.fixture(scope="module")
def server(serve_image, trained_run):
    """The serving container with the trained artifact, its model named ``fashion``, and at most 4 images a request."""
    env = (f"SERVE_MODEL_NAME={NAME}", "SERVE_MAX_IMAGES_PER_REQUEST=4")
    name, port = start_server(serve_image, trained_run[0] / "model", env=env)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(url=server, network_timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def photos(fashion):
    """(label, PNG bytes) of one real test photo per class."""
    return [(folder.name, next(folder.iterdir()).read_bytes()) for folder in sorted((fashion / "test").iterdir())]


def image_input(images: list[bytes], binary: bool = True):
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:  # JSON form: each image base64-encoded
        tensor.set_data_from_numpy(np.array([base64.b64encode(i) for i in images], dtype=np.object_), binary_data=False)
    return tensor


def outputs(binary: bool = True):
    return [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("labels", binary_data=binary),
    ]


def test_health_metadata_and_repository_index(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME) and not client.is_model_ready("other")
    server = client.get_server_metadata()
    assert server["name"] == "byoc-vision" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(NAME)
    assert {(i["name"], i["datatype"]) for i in metadata["inputs"]} == {("image", "BYTES"), ("input", "FP32")}
    assert next(i for i in metadata["inputs"] if i["name"] == "input")["shape"] == [-1, 3, 32, 32]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]),
        "labels": ("BYTES", [-1, -1]),
    }
    assert [(m["name"], m["state"]) for m in client.get_model_repository_index()] == [(NAME, "READY")]


def test_binary_jpeg_bytes_agree_with_invocations(client, server, photos):
    jpegs = []
    for _, png in photos[:4]:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").save(buffer, "JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    result = client.infer(NAME, [image_input(jpegs)], outputs=outputs(binary=True), request_id="req-1")
    probabilities, labels = result.as_numpy("probabilities"), result.as_numpy("labels")
    assert probabilities.shape == (4, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert labels.shape == (4, 5) and result.get_response()["id"] == "req-1"
    for jpeg, probs, top in zip(jpegs, probabilities, labels, strict=False):
        status, answer = post(f"http://{server}/invocations", jpeg, "image/jpeg")
        assert status == 200
        expected = answer["predictions"][0]
        assert top[0].decode() == expected["label"]
        assert abs(float(probs.max()) - expected["probability"]) < 1e-5
        assert [t.decode() for t in top] == [p["label"] for p in expected["top_k"]]


def test_json_bytes_and_a_float_tensor_give_the_same_probabilities(client, photos, trained_run):
    spec = load_spec(trained_run[0] / "model")
    pngs = [png for _, png in photos[:3]]
    by_bytes = client.infer(NAME, [image_input(pngs, binary=False)], outputs=outputs(binary=False)).as_numpy(
        "probabilities"
    )
    batch = np.stack([to_input(Image.open(io.BytesIO(p)).convert("RGB"), spec) for p in pngs])
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        result = client.infer(NAME, [tensor], outputs=outputs(binary=binary))
        assert np.allclose(result.as_numpy("probabilities"), by_bytes, atol=1e-5)
    tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    only_labels = client.infer(NAME, [tensor], outputs=outputs()[1:], parameters={"top_k": 2})
    assert only_labels.as_numpy("probabilities") is None and only_labels.as_numpy("labels").shape == (3, 2)
    classified = client.infer(
        NAME, [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=3)]
    ).as_numpy("probabilities")
    assert classified.shape == (3, 3)  # Triton's classification extension: "score:index:label", best first
    score, index, label = classified[0, 0].decode().split(":")
    assert (
        abs(float(score) - by_bytes[0].max()) < 1e-5
        and int(index) == by_bytes[0].argmax()
        and label == spec.classes[int(index)]
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: [image_input([b"\xff\xd8\xff not a jpeg"])], "cannot decode image"),
        (lambda: [image_input([b"x"] * 5)], "too many images"),
        (
            lambda: [
                httpclient.InferInput("input", [1, 3, 8, 8], "FP32").set_data_from_numpy(
                    np.zeros((1, 3, 8, 8), np.float32)
                )
            ],
            "shape [1, 3, 8, 8]",
        ),
        (
            lambda: [
                httpclient.InferInput("input", [1, 3, 32, 32], "FP32").set_data_from_numpy(
                    np.full((1, 3, 32, 32), np.nan, np.float32)
                )
            ],
            "NaN",
        ),
        (
            lambda: [
                httpclient.InferInput("pixels", [1], "BYTES").set_data_from_numpy(np.array([b"x"], dtype=np.object_))
            ],
            "the model takes 'image'",
        ),
    ],
)
def test_errors_reach_the_client_with_the_reason_and_the_server_keeps_serving(client, photos, make, message):
    with pytest.raises(InferenceServerException) as error:
        client.infer(NAME, make())
    assert message in str(error.value)
    assert client.infer(NAME, [image_input([photos[0][1]])]).as_numpy("labels").shape == (1, 5)


def test_unknown_model_and_version(client, photos):
    with pytest.raises(InferenceServerException, match="model not found"):
        client.infer("other", [image_input([photos[0][1]])])
    with pytest.raises(InferenceServerException, match="unknown model version"):
        client.infer(NAME, [image_input([photos[0][1]])], model_version="7")
    assert client.infer(NAME, [image_input([photos[0][1]])], model_version="1").as_numpy("probabilities").shape == (
        1,
        10,
    )


def raw_infer(server: str, body: bytes, headers: dict) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection(server, timeout=30)
    connection.request("POST", f"/v2/models/{NAME}/infer", body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    return response.status, json.loads(data), dict(response.getheaders())


def binary_request(elements: bytes, count: int, size: int | None = None) -> tuple[bytes, dict]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": size if size is not None else len(elements)},
                }
            ]
        }
    ).encode()
    return header + elements, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.parametrize(
    "body_headers, message",
    [
        (
            binary_request(struct.pack("<I", 2**31) + b"abc", 1),
            "declares 2147483648 bytes",
        ),  # a length far past the body
        (
            binary_request(struct.pack("<I", 3) + b"abc", 1000000),
            "too many images",
        ),  # counted before any element is read
        (binary_request(struct.pack("<I", 3) + b"abc", 1, size=10**9), "binary_data_size"),
        ((b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}), "Inference-Header-Content-Length"),
        ((b"[" * 100000, {}), "nested too deeply"),
        (
            (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1, 1, 1, 1, 1], "data": []}]}', {}),
            "shape",
        ),
        (
            (
                b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["ok"]}], "outputs": '
                b'[{"name": "secrets"}]}',
                {},
            ),
            "Unknown output",
        ),
    ],
)
def test_hostile_bodies_are_refused_before_the_work_with_a_json_error(server, body_headers, message):
    body, headers = body_headers
    status, answer, _ = raw_infer(server, body, headers)
    assert 400 <= status < 500 and message in answer["error"], answer


def test_binary_response_carries_the_header_length(server, photos):
    png = photos[1][1]
    body, headers = binary_request(struct.pack("<I", len(png)) + png, 1)
    document = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    document["parameters"] = {"binary_data_output": True}
    header = json.dumps(document).encode()
    connection = http.client.HTTPConnection(server, timeout=30)
    connection.request(
        "POST",
        f"/v2/models/{NAME}/infer",
        body=header + body[len(body) - len(png) - 4 :],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    response = connection.getresponse()
    data = response.read()
    length = int(response.getheader("Inference-Header-Content-Length"))
    answer = json.loads(data[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert sum(sizes) == len(data) - length and sizes[0] == 10 * 4
    assert np.isclose(np.frombuffer(data[length : length + 40], "<f4").sum(), 1, atol=1e-4)


def test_the_model_is_not_ready_until_it_is_loaded(serve_image, tmp_path):
    """A folder with no artifact: live, but neither the server nor the model is ready, and the index says why."""
    tmp_path.chmod(0o755)  # the server runs as a non-root user
    name, port = start_server(serve_image, tmp_path)
    try:
        deadline = time.monotonic() + 60
        with httpclient.InferenceServerClient(url=f"127.0.0.1:{port}") as client:
            while time.monotonic() < deadline:
                try:
                    if client.is_server_live():
                        break
                except Exception:
                    time.sleep(0.5)
            assert client.is_server_live() and not client.is_server_ready() and not client.is_model_ready("model")
            index = client.get_model_repository_index()
            assert index[0]["state"] in ("UNAVAILABLE", "LOADING") and (
                index[0]["state"] == "LOADING" or "model.json" in index[0]["reason"]
            )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
