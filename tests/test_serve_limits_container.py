"""The serving image's limits over real HTTP, inside a 2 GB memory limit as on a real instance: a body that stalls,
too many images, a flood of large JPEGs (503 with Retry-After, /ping still fast), one deadline, deep nesting."""

import base64
import concurrent.futures
import http.client
import io
import json
import multiprocessing
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
from aws_stand_in import free_port
from PIL import Image
from test_container import wait_for_ping

pytestmark = pytest.mark.container
LIMITS = {
    "SERVE_MAX_CONCURRENT_REQUESTS": "8",
    "SERVE_MAX_IMAGES_PER_REQUEST": "16",
    "SERVE_MAX_QUEUED_IMAGES": "16",
    "SERVE_BODY_READ_TIMEOUT_SECONDS": "2",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3",
    "SERVE_ALLOW_IMAGE_URLS": "true",
}


def large_jpeg(seed: int, size=(6000, 4000)) -> bytes:
    """A 24-megapixel photo-like JPEG (smooth, so it stays small on the wire and costs a full decode)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (size[1] // 200, size[0] // 200, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def memory_mb(name: str) -> float:
    usage = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value = usage.split("/")[0].strip()
    scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    return next(float(value[: -len(unit)]) * factor for unit, factor in scale.items() if value.endswith(unit))


@pytest.fixture(scope="module")
def limited(serve_image, trained_run):
    """The serving container with small limits and --memory 2g."""
    name, port = f"byoc-limits-{free_port()}", free_port()
    env = [a for k, v in LIMITS.items() for a in ("-e", f"{k}={v}")]
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--memory",
            "2g",
            "--memory-swap",
            "2g",
            *env,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{trained_run[0] / 'model'}:/opt/ml/model:ro",
            serve_image,
            "serve",
        ],
        check=True,
        capture_output=True,
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, name, port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def healthy(client, png: bytes) -> None:
    assert client.post("/invocations", content=png, headers={"Content-Type": "image/png"}).status_code == 200


@pytest.fixture(scope="module")
def png(fashion) -> bytes:
    return next((fashion / "test" / "Coat").iterdir()).read_bytes()


def test_a_stalled_body_is_408_within_the_read_timeout(limited, png):
    client, _, port = limited
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
            + png[:100]
        )
        started = time.perf_counter()
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            answer += chunk
        answer, waited = answer.decode(), time.perf_counter() - started
    assert answer.startswith("HTTP/1.1 408") and '"error": "request timeout"' in answer and 1.5 < waited < 4, (
        answer,
        waited,
    )
    healthy(client, png)


def test_too_many_tiny_images_are_refused_at_once_and_cost_no_memory(limited, png):
    client, name, _ = limited
    before = memory_mb(name)
    tiny = base64.b64encode(png[:60]).decode()
    body = json.dumps({"instances": [tiny] * 60_000}).encode()  # under 6 MB: the body limit alone would let it in
    started = time.perf_counter()
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too many images"
    assert time.perf_counter() - started < 3 and memory_mb(name) < before + 200
    for nested in (b"[" * 500_000, b'{"instances": [' * 100_000):
        assert (
            client.post("/invocations", content=nested, headers={"Content-Type": "application/json"}).status_code == 400
        )
    healthy(client, png)


def flood(port: int, jpegs: list[bytes], requests: int, path: str = "/invocations") -> list[tuple[int, str | None]]:
    """``requests`` concurrent large-JPEG requests to ``path``, one connection each; (status, Retry-After) for each."""

    def send(i: int) -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", path, body=jpegs[i % len(jpegs)], headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("Retry-After")
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        return list(pool.map(send, range(requests)))


def test_a_flood_of_large_jpegs_gets_503s_and_ping_stays_fast(limited, png):
    """32 concurrent 24-megapixel JPEGs from another process (so the client's own threads do not delay the pings)."""
    client, name, port = limited
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    ) as other:  # no fork of a threaded process
        flooding = other.submit(flood, port, [large_jpeg(seed) for seed in range(4)], 32)
        pings = []
        while not flooding.done():
            started = time.perf_counter()
            assert client.get("/ping").status_code == 200
            pings.append(time.perf_counter() - started)
            time.sleep(0.02)
        outcomes = flooding.result()
    statuses = sorted(status for status, _ in outcomes)
    print(
        f"flood of 32 x 24 MP JPEGs: statuses {statuses}; /ping p99 {np.percentile(pings, 99) * 1000:.0f} ms, worst "
        f"{max(pings) * 1000:.0f} ms over {len(pings)}"
    )
    assert set(statuses) <= {200, 503, 504} and statuses.count(503) >= 1 and statuses.count(200) >= 8
    assert all(retry == "1" for status, retry in outcomes if status == 503)
    assert np.percentile(pings, 99) < 0.1 and max(pings) < 1
    assert memory_mb(name) < 2048 * 0.9
    healthy(client, png)


def test_a_flood_of_large_jpegs_asking_for_explanations_stays_inside_the_memory_limit(limited, png):
    """Each explanation draws an overlay at the input's size (24 MP here): the pictures are decoded one at a time and
    drawn in 8 bits, so 16 such requests at once stay well inside the container's 2 GB."""
    client, name, port = limited
    peak = 0.0
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as other:
        flooding = other.submit(flood, port, [large_jpeg(seed) for seed in range(4)], 16, "/invocations?explain=cam")
        while not flooding.done():
            peak = max(peak, memory_mb(name))
            assert client.get("/ping").status_code == 200
        statuses = sorted(status for status, _ in flooding.result())
    state = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .State}}", name], capture_output=True, text=True, check=True
        ).stdout
    )
    print(f"flood of 16 x 24 MP JPEGs with explain=cam: statuses {statuses}; peak memory {peak:.0f} MB")
    assert state["Running"] and not state["OOMKilled"] and peak < 2048 * 0.9
    assert set(statuses) <= {200, 503, 504}  # 504: past these limits' 3 s deadline, the work in hand is still bounded
    answer = client.post("/invocations?explain=cam", content=png, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["explanation"]["overlay_png"]


def solid_png(size: tuple[int, int]) -> str:
    """A base64 PNG of one colour: a few kB on the wire, a full decode of every pixel."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_beyond_the_queue_budget_get_503(limited, png):
    """Four concurrent requests of 8 12-megapixel PNGs against a budget of 16 images: two run, two are refused."""
    client, _, port = limited
    body = json.dumps({"instances": [solid_png((4000, 3000))] * 8}).encode()

    def send(_) -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as own:
            return own.post("/invocations", content=body, headers={"Content-Type": "application/json"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    refused = [a for a in answers if a.status_code == 503]
    assert sorted(a.status_code for a in answers) == [200, 200, 503, 503], [a.text for a in answers]
    assert all("SERVE_MAX_QUEUED_IMAGES" in a.json()["detail"] and a.headers["retry-after"] == "1" for a in refused)
    healthy(client, png)


def test_one_deadline_covers_decoding(limited, png):
    """16 36-megapixel PNGs take far longer than the 3 s deadline to decode: 504 at the deadline."""
    client, _, _ = limited
    body = json.dumps({"instances": [solid_png((6000, 6000))] * 16}).encode()
    started = time.perf_counter()
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 504 and response.json()["error"] == "timeout" and elapsed < 4.5, (
        response.text,
        elapsed,
    )
    healthy(client, png)


def test_image_urls_to_loopback_or_the_metadata_address_get_one_answer(limited, png):
    client, _, _ = limited
    answers = set()
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/ping",
        "http://localhost:1/",
        "http://10.0.0.1:9/x.png",
    ):
        started = time.perf_counter()
        response = client.post("/invocations", json={"url": url})
        assert response.status_code == 400 and time.perf_counter() - started < 2, response.text
        answers.add(response.text)
    assert len(answers) == 1 and "cannot fetch image URL" in answers.pop()
    healthy(client, png)
