"""The pipeline's limits with a real artifact over the ASGI app (TestClient): images per request, requests in flight,
queued images, one deadline per request, deep nesting, URL fetching, and the error shape of every 4xx."""

import base64
import concurrent.futures
import functools
import http.server
import json
import shutil
import socketserver
import textwrap
import threading
import time

import numpy as np
import pytest
from hostile_inputs import npy
from test_serve import ready_client, settings_for

from serve.settings import Settings, SettingsError


@pytest.fixture(scope="module")
def model_dir(trained_run):
    return trained_run[0] / "model"


@pytest.fixture(scope="module")
def png(fashion) -> bytes:
    return next((fashion / "test" / "Bag").iterdir()).read_bytes()


@pytest.fixture
def serve(model_dir):
    clients = []

    def start(directory=None, **overrides):
        client = ready_client(settings_for(directory or model_dir, **overrides))
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def slow_model(model_dir, tmp_path):
    """The artifact with a code/inference.py whose predict_fn takes ``SLOW_SECONDS``: requests stay in flight."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import time

            def predict_fn(data, model):
                time.sleep(1.5)
                return model.predict(data)
            """
        )
    )
    return folder


def assert_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and body["detail"], body
    return body


def test_too_many_images_is_413_before_any_is_decoded(serve, png):
    """66,000 tiny images in one 6 MB body: refused at once, not decoded into 66,000 tensors."""
    client = serve()
    hostile = json.dumps({"instances": ["iVBORw0KGgo="] * 66_000}).encode()
    started = time.perf_counter()
    body = assert_error(
        client.post("/invocations", content=hostile, headers={"Content-Type": "application/json"}),
        413,
        "too many images",
    )
    assert time.perf_counter() - started < 3 and "SERVE_MAX_IMAGES_PER_REQUEST" in body["detail"]
    lines = b"".join(json.dumps({"image": base64.b64encode(png).decode()}).encode() + b"\n" for _ in range(65))
    assert_error(
        client.post("/invocations", content=lines, headers={"Content-Type": "application/jsonlines"}),
        413,
        "too many images",
    )
    tensor = npy(np.zeros((65, 3, 32, 32), np.float32))
    assert_error(
        client.post("/invocations", content=tensor, headers={"Content-Type": "application/x-npy"}),
        413,
        "too many images",
    )
    at_limit = json.dumps({"instances": [base64.b64encode(png).decode()] * 64}).encode()
    assert (
        client.post("/invocations", content=at_limit, headers={"Content-Type": "application/json"}).status_code == 200
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000,
        b'{"instances": ' * 50_000,
        json.dumps({"instances": [{"instances": ["aGk="]}]}).encode(),
        b'{"instances": [{"url": 5}]}',
    ],
)
def test_deep_nesting_and_odd_json_are_400(serve, body):
    assert serve().post("/invocations", content=body, headers={"Content-Type": "application/json"}).status_code == 400


def test_every_4xx_has_the_error_shape_the_frameworks_own_too(serve, png):
    client = serve()
    assert_error(client.get("/no-such-route"), 404, "not found")
    assert_error(client.get("/invocations"), 405, "method not allowed")
    assert_error(client.post("/invocations", files={"field": (None, "text only")}), 400, "no file")
    assert_error(
        client.post("/invocations", content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"}),
        400,
        "bad multipart body",
    )
    assert_error(
        client.post("/invocations", content=png, headers={"Content-Type": "application/json"}), 400, "bad JSON"
    )


def test_requests_over_the_concurrency_limit_get_503_with_retry_after_and_ping_stays_fast(serve, slow_model, png):
    client = serve(slow_model, max_concurrent_requests=2)
    headers = {"Content-Type": "image/png"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(client.post, "/invocations", content=png, headers=headers) for _ in range(6)]
        time.sleep(0.5)
        pings = []
        for _ in range(10):
            started = time.perf_counter()
            assert client.get("/ping").status_code == 200
            pings.append(time.perf_counter() - started)
        statuses = sorted(a.result().status_code for a in answers)
    assert statuses == [200, 200, 503, 503, 503, 503]
    refused = next(a.result() for a in answers if a.result().status_code == 503)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"] == "busy"
    assert max(pings) < 0.1, pings
    assert client.post("/invocations", content=png, headers=headers).status_code == 200  # the slots came back


def test_images_over_the_queue_budget_get_503(serve, slow_model, png):
    client = serve(slow_model, max_queued_images=6, max_images_per_request=4)
    body = json.dumps({"instances": [base64.b64encode(png).decode()] * 4}).encode()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: client.post("/invocations", content=body, headers={"Content-Type": "application/json"}),
                range(2),
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 503]
    assert "SERVE_MAX_QUEUED_IMAGES" in next(a for a in answers if a.status_code == 503).json()["detail"]
    assert client.post("/invocations", content=body, headers={"Content-Type": "application/json"}).status_code == 200


def test_one_deadline_covers_prediction(serve, slow_model, png):
    client = serve(slow_model, timeout_seconds=1)
    started = time.perf_counter()
    assert_error(client.post("/invocations", content=png, headers={"Content-Type": "image/png"}), 504, "timeout")
    assert time.perf_counter() - started < 1.4


def test_settings_refuse_a_per_request_cap_above_the_queue_budget():
    with pytest.raises(SettingsError, match="SERVE_MAX_QUEUED_IMAGES"):
        Settings.from_env({"SERVE_MAX_IMAGES_PER_REQUEST": "100", "SERVE_MAX_QUEUED_IMAGES": "50"})


class Files(http.server.SimpleHTTPRequestHandler):
    """Test photos, plus /redirect (to a photo), /trickle (one byte every 0.3 s) and /big."""

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/Bag/" + sorted((self.server.root / "Bag").iterdir())[0].name)
            self.end_headers()
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:  # the server under test hung up, as it should
                pass
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def files(fashion):
    server = socketserver.ThreadingTCPServer(
        ("127.0.0.1", 0), functools.partial(Files, directory=str(fashion / "test"))
    )
    server.daemon_threads = True
    server.root = fashion / "test"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    photo = sorted((fashion / "test" / "Bag").iterdir())[0].name
    yield f"http://127.0.0.1:{server.server_address[1]}", f"/Bag/{photo}"
    server.shutdown()


def fetch(client, *urls):
    return client.post("/invocations", json={"instances": [{"url": u} for u in urls]})


def test_image_urls_to_private_addresses_are_refused_unless_allowed(serve, files):
    base, photo = files
    default = serve(allow_image_urls=True)
    refused = assert_error(fetch(default, base + photo), 400, "cannot fetch image URL")
    for url in (
        base + "/missing.png",
        "http://127.0.0.1:1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        base + "/redirect",
    ):
        assert (
            assert_error(fetch(default, url), 400, "cannot fetch image URL") == refused
        )  # one answer: no port-scan oracle
    assert_error(fetch(default, "file:///etc/passwd"), 400, "bad image URL")
    private = serve(allow_image_urls=True, allow_private_image_urls=True, image_url_timeout_seconds=1)
    assert fetch(private, base + photo).status_code == 200
    assert (
        assert_error(fetch(private, base + "/redirect"), 400, "cannot fetch image URL") == refused
    )  # redirects are never followed
    assert (
        assert_error(fetch(private, "http://169.254.169.254/latest/meta-data/"), 400, "cannot fetch image URL")
        == refused
    )
    started = time.perf_counter()
    assert assert_error(fetch(private, base + "/trickle"), 400, "cannot fetch image URL") == refused
    assert time.perf_counter() - started < 1.6  # one total deadline, not one per read
    assert_error(fetch(private, *[base + photo] * 9), 413, "too many image URLs")


def test_the_request_deadline_bounds_url_fetching(serve, files):
    base, _ = files
    client = serve(allow_image_urls=True, allow_private_image_urls=True, timeout_seconds=1)
    started = time.perf_counter()
    assert_error(fetch(client, base + "/trickle"), 504, "timeout")
    assert time.perf_counter() - started < 1.5


def test_private_address_check():
    import ipaddress

    from serve.fetch import allowed

    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ):
        assert not allowed(ipaddress.ip_address(address), False), address
    assert allowed(ipaddress.ip_address("93.184.216.34"), False) and allowed(ipaddress.ip_address("10.1.2.3"), True)
    assert not allowed(ipaddress.ip_address("169.254.169.254"), True) and not allowed(
        ipaddress.ip_address("fd00:ec2::254"), True
    )


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:0a00:0001::1",
        "2002:c0a8:0001::",
        "2002:a9fe:a9fe::1",
    ],
)
def test_ipv6_addresses_that_carry_a_private_ipv4_are_refused(address):
    """NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses reach the IPv4 address they carry."""
    import ipaddress

    from serve.fetch import allowed

    assert not allowed(ipaddress.ip_address(address), False)
    assert allowed(ipaddress.ip_address("64:ff9b::5db8:d822"), False) and allowed(
        ipaddress.ip_address("2002:5db8:d822::1"), False
    )  # 93.184.216.34
    assert not allowed(
        ipaddress.ip_address("2002:a9fe:a9fe::1"), True
    )  # the metadata address stays refused even with private allowed
