"""The serving image under the SageMaker endpoint contract: ``docker run IMAGE serve`` with the artifact mounted."""

import base64
import json
import os
import subprocess
import time
import uuid

import pytest
from aws_stand_in import free_port
from test_container import post, wait_for_ping

pytestmark = pytest.mark.container


def start_server(
    image: str,
    model_dir,
    container_port: int = 8080,
    env: tuple[str, ...] = (),
    mount: str = "/opt/ml/model",
    docker_options: tuple[str, ...] = (),
) -> tuple[str, int]:
    """``docker run -d IMAGE serve`` with the model folder mounted at ``mount``, published on a free 127.0.0.1 port."""
    name, port = f"byoc-serve-{uuid.uuid4().hex[:8]}", free_port()
    options = [a for e in env for a in ("-e", e)]
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            *options,
            *docker_options,
            "-p",
            f"127.0.0.1:{port}:{container_port}",
            "-v",
            f"{model_dir}:{mount}:ro",
            image,
            "serve",
        ],
        check=True,
        capture_output=True,
    )
    return name, port


@pytest.fixture(scope="module")
def endpoint(serve_image, trained_run):
    """The serving container with the trained artifact."""
    started = time.perf_counter()
    name, port = start_server(serve_image, trained_run[0] / "model")
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        print(f"cold start (docker run -> first 200 on /ping): {time.perf_counter() - started:.2f} s")
        yield f"http://127.0.0.1:{port}", name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_predictions_over_real_http(endpoint, fashion):
    url, _ = endpoint
    png = next((fashion / "test" / "Trouser").iterdir()).read_bytes()
    status, answer = post(f"{url}/invocations", png, "image/png")
    assert status == 200 and len(answer["predictions"][0]["top_k"]) == 5
    body = json.dumps({"instances": [base64.b64encode(png).decode()] * 3}).encode()
    status, answer = post(f"{url}/invocations?top_k=2", body, "application/json")
    assert status == 200 and [len(p["top_k"]) for p in answer["predictions"]] == [2, 2, 2]


def test_bad_input_is_a_4xx_and_the_container_keeps_serving(endpoint, fashion):
    url, name = endpoint
    status, answer = post(f"{url}/invocations", b"\xff\xd8\xff broken", "image/jpeg")
    assert status == 400 and answer["error"] == "cannot decode image"
    import http.client

    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/invocations")  # announce 7 MB, send none of it: the answer must not wait for it
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(7 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"] == "payload too large"
    connection.close()
    assert post(f"{url}/invocations", next((fashion / "test" / "Bag").iterdir()).read_bytes(), "image/png")[0] == 200
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
    assert '"POST /invocations' in logs and '"GET /ping' not in logs  # health checks stay out of the access log


def test_image_is_small_starts_as_root_as_sagemaker_does_and_has_no_torch(serve_image):
    """No USER: SageMaker runs containers as root; `serve` drops to model-server itself
    (tests/test_root_container.py)."""
    inspect = json.loads(
        subprocess.run(["docker", "image", "inspect", serve_image], capture_output=True, text=True, check=True).stdout
    )[0]
    print(f"serving image size: {inspect['Size'] / 1e6:.0f} MB")
    assert inspect["Size"] <= 1e9
    labels = inspect["Config"]["Labels"]
    assert (
        labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"]
        == labels["com.amazonaws.sagemaker.capabilities.multi-models"]
        == "true"
    )
    assert inspect["Config"]["User"] in ("", "root") and "8080/tcp" in inspect["Config"]["ExposedPorts"]
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            serve_image,
            "python",
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'))",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "None"


def test_bind_to_port(serve_image, trained_run):
    name, port = start_server(
        serve_image, trained_run[0] / "model", container_port=9123, env=("SAGEMAKER_BIND_TO_PORT=9123",)
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        cores = len(os.sched_getaffinity(0))  # no CPU limit: every core of the host's affinity
        assert f"{cores} model thread(s), {cores} decode thread(s)" in container_logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def container_logs(name: str) -> str:
    done = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def test_a_cpu_limit_gives_one_thread_and_the_start_up_line_says_why(serve_image, trained_run, fashion):
    """``docker run --cpus 1`` on a multi-core host: os.cpu_count() still counts the host's cores, the server must
    count the cgroup's quota."""
    name, port = start_server(serve_image, trained_run[0] / "model", docker_options=("--cpus", "1"))
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        logs = container_logs(name)
        assert "1 model thread(s), 1 decode thread(s): 1 usable core (cgroup CPU quota 1," in logs, logs
        photo = next((fashion / "test").rglob("*.png")).read_bytes()
        assert post(f"http://127.0.0.1:{port}/invocations", photo, "image/png")[0] == 200
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_sigterm_drains_in_flight_requests(serve_image, trained_run, fashion):
    """docker stop (SIGTERM) while requests run: each accepted request still gets its 200, the exit is clean."""
    import http.client
    import threading

    limits = (
        "SERVE_MAX_IMAGES_PER_REQUEST=400",
        "SERVE_MAX_QUEUED_IMAGES=1600",
    )  # large requests, to be in flight at the stop
    name, port = start_server(serve_image, trained_run[0] / "model", env=limits)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        png = next((fashion / "test" / "Dress").iterdir()).read_bytes()
        body = json.dumps({"instances": [base64.b64encode(png).decode()] * 400}).encode()
        outcomes: list = []

        def send():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                outcomes.append((response.status, len(json.loads(response.read())["predictions"])))
            except ConnectionRefusedError:
                outcomes.append("refused")  # arrived after the listening socket closed: never accepted
            except Exception as exc:  # a reset or a half answer would mean a request was dropped
                outcomes.append(repr(exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
        for thread in threads:
            thread.join(timeout=120)
        assert all(o in ((200, 400), "refused") for o in outcomes), outcomes
        assert outcomes.count((200, 400)) >= 1
        state = json.loads(
            subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
        )[0]["State"]
        assert state["ExitCode"] == 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_torch_flavour_serves_weights_and_user_code_that_needs_torch(torch_serve_image, trained_run, tmp_path, fashion):
    """FLAVOUR=torch: SERVE_RUNTIME=torch on an artifact without model.onnx, and a code/inference.py importing torch."""
    import shutil
    import textwrap

    weights_only = tmp_path / "weights_only"
    shutil.copytree(trained_run[0] / "model", weights_only)
    (weights_only / "model.onnx").unlink()
    with_code = tmp_path / "with_code"
    shutil.copytree(weights_only, with_code)
    (with_code / "code").mkdir()
    (with_code / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import json, os
            import torch, torchvision
            from safetensors.torch import load_file

            def model_fn(model_dir):
                info = json.load(open(os.path.join(model_dir, "model.json")))
                net = torchvision.models.get_model(info["architecture"], num_classes=info["num_classes"])
                net.load_state_dict(load_file(os.path.join(model_dir, "weights.safetensors")))
                net.temperature = info["calibration"]["temperature"]  # a predict_fn replaces ours: it calibrates itself
                return net.eval()

            def predict_fn(batch, model):
                with torch.no_grad():
                    return torch.softmax(model(torch.from_numpy(batch)) / model.temperature, dim=1).numpy()
            """
        )
    )
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    png = next((fashion / "test" / "Sandal").iterdir()).read_bytes()
    answers = []
    for model_dir, env in ((weights_only, ("SERVE_RUNTIME=torch",)), (with_code, ())):
        name, port = start_server(torch_serve_image, model_dir, env=env)
        try:
            wait_for_ping(f"http://127.0.0.1:{port}/ping", 180)
            status, answer = post(f"http://127.0.0.1:{port}/invocations", png, "image/png")
            assert status == 200, answer
            answers.append(answer["predictions"][0])
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert (
        answers[0]["label"] == answers[1]["label"] and abs(answers[0]["probability"] - answers[1]["probability"]) < 1e-4
    )


@pytest.fixture(scope="module")
def client(endpoint):
    import httpx

    with httpx.Client(base_url=endpoint[0], timeout=60) as client:
        yield client


def test_every_content_type_and_accept_type_over_real_http(client, fashion):
    import io

    import numpy as np
    from hostile_inputs import as_format, npy

    png = next((fashion / "test" / "Dress").iterdir()).read_bytes()
    b64 = base64.b64encode(png).decode()
    bodies = {
        "image/png": png,
        "image/jpeg": as_format(png, "JPEG"),
        "image/webp": as_format(png, "WEBP"),
        "application/x-image": as_format(png, "JPEG"),
        "application/json": json.dumps({"instances": [b64, {"image": b64}]}).encode(),
        "application/jsonlines": f'{{"image": "{b64}"}}\n{{"image": "{b64}"}}\n'.encode(),
        "application/x-npy": npy(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)),
    }
    for content_type, body in bodies.items():
        for accept in ("application/json", "application/jsonlines", "application/x-npy"):
            response = client.post(
                "/invocations", content=body, headers={"Content-Type": content_type, "Accept": accept}
            )
            assert response.status_code == 200 and response.headers["content-type"] == accept, (
                content_type,
                accept,
                response.text,
            )
            count = 2 if content_type in ("application/json", "application/jsonlines", "application/x-npy") else 1
            if accept == "application/x-npy":
                assert np.load(io.BytesIO(response.content)).shape == (count, 10)
            elif accept == "application/json":
                assert len(response.json()["predictions"]) == count
            else:
                assert [len(json.loads(line)["top_k"]) for line in response.text.splitlines()] == [5] * count
    form = client.post("/invocations", files={"file": ("dress.png", png, "image/png")})
    assert form.status_code == 200 and form.json()["predictions"][0]["label"]
    assert (
        len(
            client.post(
                "/invocations",
                content=png,
                headers={"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"},
            ).json()["predictions"][0]["top_k"]
        )
        == 2
    )


def test_every_bad_input_over_real_http(client, fashion):
    from hostile_inputs import BAD, as_format

    png = next((fashion / "test" / "Shirt").iterdir()).read_bytes()
    for name, body, content_type, status, error in BAD:
        body = as_format(png, "JPEG")[:150] if body is None else body
        response = client.post(
            "/invocations", content=body, headers={"Content-Type": content_type} if content_type else {}
        )
        assert response.status_code == status and response.json()["error"] == error and response.json()["detail"], (
            name,
            response.text,
        )
    assert (
        client.post("/invocations?top_k=zero", content=png, headers={"Content-Type": "image/png"}).json()["error"]
        == "bad top_k"
    )
    assert (
        client.post(
            "/invocations", content=png, headers={"Content-Type": "image/png", "Accept": "text/csv"}
        ).status_code
        == 406
    )
    assert client.post("/invocations", content=png, headers={"Content-Type": "image/png"}).status_code == 200


def test_handler_overrides_in_the_container(serve_image, trained_run, tmp_path, fashion):
    """code/inference.py in the artifact: a transform_fn with context, served by the image over real HTTP."""
    import shutil
    import textwrap

    model_dir = tmp_path / "model"
    shutil.copytree(trained_run[0] / "model", model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import json

            def input_fn(body, content_type):
                if content_type != "application/json":
                    raise ValueError("send JSON")
                return json.loads(body)

            def predict_fn(data, model):
                return {"echo": data, "model": type(model).__name__}

            def output_fn(prediction, accept, context):
                custom = context.request_headers.get("x-amzn-sagemaker-custom-attributes")
                return json.dumps({**prediction, "custom": custom}), "application/json"
            """
        )
    )
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    import httpx

    name, port = start_server(serve_image, model_dir)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "tenant=a"}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", content=b'{"x": 1}', headers=headers, timeout=30)
        assert answer.status_code == 200 and answer.json() == {
            "echo": {"x": 1},
            "model": "OpenVinoModel",
            "custom": "tenant=a",
        }
        failed = httpx.post(
            f"http://127.0.0.1:{port}/invocations", content=b"x", headers={"Content-Type": "image/png"}, timeout=30
        )
        assert (
            failed.status_code == 500 and failed.json()["error"] == "internal error" and "send JSON" not in failed.text
        )
        request_id = failed.headers["x-request-id"]
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert (
            f"input_fn in code/inference.py failed (request id {request_id})" in logs
            and "ValueError: send JSON" in logs
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
