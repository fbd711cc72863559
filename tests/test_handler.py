"""code/inference.py overrides with the SageMaker inference toolkit's semantics."""

import contextlib
import shutil
import textwrap

import pytest
from test_serve import ready_client, settings_for


@pytest.fixture
def model_with_code(trained_run, tmp_path):
    """A copy of the trained artifact with a code/ folder to fill."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_run[0] / "model", model_dir)
    (model_dir / "code").mkdir()
    return model_dir


@contextlib.contextmanager
def serve_with(model_dir, source: str, **settings):
    """A ready TestClient over the model folder with ``source`` as code/inference.py."""
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(source))
    client = ready_client(settings_for(model_dir, **settings))
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def test_output_fn_override_with_context_keeps_our_input_and_predict(model_with_code, fashion):
    with serve_with(
        model_with_code,
        """
        import json

        def output_fn(prediction, accept, context):
            classes = json.load(open(context.system_properties["model_dir"] + "/model.json"))["classes"]
            best = prediction.argmax(axis=1)
            return "\\n".join(f"{classes[i]},{prediction[n, i]:.4f}" for n, i in enumerate(best)), "text/csv"
        """,
    ) as client:
        png = next((fashion / "test" / "Coat").iterdir()).read_bytes()
        response = client.post("/invocations", content=png, headers={"Content-Type": "image/png"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        label, probability = response.text.split(",")
        assert label in {p.name for p in (fashion / "train").iterdir()} and 0 < float(probability) <= 1
        assert (
            client.post("/invocations", content=b"", headers={"Content-Type": "image/png"}).status_code == 400
        )  # our input_fn


def test_model_input_predict_fn_overrides_and_text_bodies(model_with_code):
    with serve_with(
        model_with_code,
        """
        def model_fn(model_dir):
            return {"offset": 10}

        def input_fn(body, content_type):
            assert isinstance(body, str) and content_type == "application/json"
            import json
            return json.loads(body)["values"]

        def predict_fn(data, model, context):
            return [v + model["offset"] for v in data]

        def output_fn(prediction, accept):
            import json
            return json.dumps({"result": prediction})
        """,
    ) as client:
        response = client.post("/invocations", json={"values": [1, 2]})
        assert response.status_code == 200 and response.json() == {"result": [11, 12]}
        assert response.headers["content-type"].startswith("application/json")


def test_transform_fn_and_errors_in_user_code(model_with_code, caplog):
    with serve_with(
        model_with_code,
        """
        def model_fn(model_dir):
            return "m"

        def transform_fn(model, body, content_type, accept):
            if body == b"boom":
                raise ValueError("the user's code failed")
            return body[::-1], "application/octet-stream"
        """,
    ) as client:
        response = client.post("/invocations", content=b"abc", headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200 and response.content == b"cba"
        failed = client.post("/invocations", content=b"boom", headers={"Content-Type": "application/octet-stream"})
        assert failed.status_code == 500 and failed.json()["error"] == "internal error"
        request_id = failed.headers["x-request-id"]
        assert (
            "the user's code failed" not in failed.text and request_id in failed.json()["detail"]
        )  # the client gets an id, not the text
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert (
            len(logged) == 1
            and "transform_fn in code/inference.py failed" in logged[0].getMessage()
            and "the user's code failed" in caplog.text
        )


def test_requirements_are_installed_before_the_script_loads(model_with_code, tmp_path):
    (model_with_code / "code" / "requirements.txt").write_text("tinydb==4.8.2\n")  # in no extra of ours
    with serve_with(
        model_with_code,
        """
        import tinydb

        def transform_fn(model, body, content_type, accept):
            return tinydb.__version__ + " " + tinydb.__file__, "text/plain"
        """,
        code_packages_dir=tmp_path / "packages",
    ) as client:
        response = client.post("/invocations", content=b"x", headers={"Content-Type": "application/octet-stream"})
        version, location = response.text.split(" ", 1)
        assert version == "4.8.2" and location.startswith(str(tmp_path / "packages"))


def test_broken_script_makes_ping_say_it_failed_and_the_log_why(model_with_code):
    (model_with_code / "code" / "inference.py").write_text(
        "def model_fn(model_dir):\n    raise RuntimeError('no weights here')\n"
    )
    import time

    from fastapi.testclient import TestClient

    from serve.app import create_app

    with TestClient(create_app(settings_for(model_with_code))) as client:
        deadline = time.monotonic() + 10
        while "failed" not in client.get("/ping").text and time.monotonic() < deadline:
            time.sleep(0.05)
        ping = client.get("/ping").json()
        assert ping == {
            "error": "model failed to load",
            "detail": "The model failed to load (RuntimeError while loading); the server's log says why. Fix the "
            "model folder and restart.",
        }
        assert client.app.state.model.cause == "RuntimeError: no weights here"  # what the log line says


def every_body(png: bytes) -> dict:
    """One body of every served content type (two images where the type can carry several)."""
    import base64
    import json

    import numpy as np
    from hostile_inputs import as_format, npy

    b64 = base64.b64encode(png).decode()
    return {
        "image/png": png,
        "image/jpeg": as_format(png, "JPEG"),
        "image/webp": as_format(png, "WEBP"),
        "application/x-image": as_format(png, "JPEG"),
        "application/json": json.dumps({"instances": [b64, {"image": b64}]}).encode(),
        "application/jsonlines": f'{{"image": "{b64}"}}\n{{"b64": "{b64}"}}\n'.encode(),
        "application/x-npy": npy(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)),
    }


ACCEPTS = ("application/json", "application/jsonlines", "application/x-npy", "*/*")


def answers(post, png: bytes) -> dict:
    """(status, content type, body) for every content type x Accept type, top_k from the custom attributes."""
    results = {}
    for content_type, body in every_body(png).items():
        for accept in ACCEPTS:
            headers = {"Content-Type": content_type, "Accept": accept, "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"}
            response = post(body, headers)
            results[content_type, accept] = (response.status_code, response.headers["content-type"], response.content)
    return results


def test_the_override_path_answers_as_invocations_for_every_content_and_accept_type(
    model_with_code, trained_run, fashion
):
    """A code/inference.py replacing only predict_fn keeps our decoding, batching-free prediction and encoding."""
    png = next((fashion / "test" / "Dress").iterdir()).read_bytes()
    plain = ready_client(settings_for(trained_run[0] / "model", runtime="onnxruntime", precision="fp32"))
    try:
        expected = answers(lambda body, headers: plain.post("/invocations", content=body, headers=headers), png)
    finally:
        plain.__exit__(None, None, None)
    assert all(status == 200 for status, _, _ in expected.values())
    with serve_with(
        model_with_code,
        "def predict_fn(data, model):\n    return model.predict(data)\n",
        runtime="onnxruntime",
        precision="fp32",
    ) as client:
        assert (
            answers(lambda body, headers: client.post("/invocations", content=body, headers=headers), png) == expected
        )


def make_wheel(folder, name: str, version: str, source: str):
    """A pure-Python wheel ``name-version-py3-none-any.whl`` holding module ``name`` with ``source``."""
    import zipfile

    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: byoc-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
        wheel.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in files) + f"{info}/RECORD,,\n")
    return path


def test_requirements_install_offline_from_wheels_in_code_per_model(model_with_code, tmp_path):
    make_wheel(model_with_code / "code", "byoc_probe", "1.0", "ANSWER = 42\n")
    (model_with_code / "code" / "requirements.txt").write_text("byoc_probe==1.0\n")
    packages = tmp_path / "packages"
    with serve_with(
        model_with_code,
        """
        import byoc_probe

        def transform_fn(model, body, content_type, accept):
            return f"{byoc_probe.ANSWER} {byoc_probe.__file__}", "text/plain"
        """,
        code_packages_dir=packages,
    ) as client:
        answer, location = client.post(
            "/invocations", content=b"x", headers={"Content-Type": "application/octet-stream"}
        ).text.split(" ", 1)
    assert answer == "42" and location.startswith(str(packages)) and len(list(packages.glob("*/.installed"))) == 1


def test_requirements_that_cannot_install_make_ping_say_why(model_with_code, tmp_path):
    (model_with_code / "code" / "requirements.txt").write_text("byoc-no-such-package-anywhere==9.9\n")
    (model_with_code / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return 1\n")
    import time

    from fastapi.testclient import TestClient

    from serve.app import create_app

    with TestClient(
        create_app(settings_for(model_with_code, code_packages_dir=tmp_path / "p", requirements_timeout_seconds=120))
    ) as client:
        deadline = time.monotonic() + 120
        while "failed" not in client.get("/ping").text and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "the server's log says why" in client.get("/ping").json()["detail"]
        detail = client.app.state.model.cause
    assert detail.startswith("RequirementsError: pip could not install") and "byoc-no-such-package-anywhere" in detail


def test_shipped_wheels_are_the_only_source(model_with_code, tmp_path):
    """With wheels in code/, a requirement they lack fails offline: pip never asks the index, where a public
    package of the same name could replace a private one. ``six`` is on PyPI, so the old fallback installed it."""
    from serve.user_code import RequirementsError, install_requirements

    make_wheel(model_with_code / "code", "byoc_probe", "1.0", "ANSWER = 42\n")
    (model_with_code / "code" / "requirements.txt").write_text("byoc_probe==1.0\nsix\n")
    with pytest.raises(
        RequirementsError, match=r"No matching distribution found for six.*only they are used: add the missing ones"
    ):
        install_requirements(model_with_code, tmp_path / "p", 120)
    assert not list((tmp_path / "p").glob("*/six.py"))


def test_a_requirements_timeout_kills_pip_and_its_children(model_with_code, tmp_path):
    """pip stuck on a package server that never answers is killed with its whole process group within the
    deadline, and the lock wait counts against the same deadline."""
    import fcntl
    import socket
    import subprocess
    import time

    from serve.user_code import RequirementsError, install_requirements

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never answers
    marker = f"byoc-stuck-{silent.getsockname()[1]}"
    (model_with_code / "code" / "requirements.txt").write_text(
        f"--index-url http://127.0.0.1:{silent.getsockname()[1]}/{marker}/\nbyoc-anything\n"
    )
    started = time.monotonic()
    with pytest.raises(RequirementsError, match=r"took over 3 s \(SERVE_REQUIREMENTS_TIMEOUT_SECONDS\)"):
        install_requirements(model_with_code, tmp_path / "p", 3)
    assert time.monotonic() - started < 6
    requirements = str(model_with_code / "code" / "requirements.txt")
    assert (
        requirements not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    )  # no pip left behind
    lock_file = next((tmp_path / "p").glob("*.lock"))
    with open(lock_file) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another worker holds the lock for the whole deadline
        started = time.monotonic()
        with pytest.raises(RequirementsError, match="held the requirements lock"):
            install_requirements(model_with_code, tmp_path / "p", 2)
        assert 2 <= time.monotonic() - started < 3.5
    silent.close()
