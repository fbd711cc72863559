"""The server as its image runs it (``python -m serve``, real uvicorn, real sockets on 127.0.0.1): stalled uploads
hold no inference slot, a client that hangs up is one log line, and SIGTERM drains (issue 26)."""

import concurrent.futures
import http.client
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m serve`` on a free port, its log collected."""

    def __init__(self, model_dir, **env):
        self.port = free_port()
        full_env = {
            **os.environ,
            "SAGEMAKER_MODEL_DIR": str(model_dir),
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "SERVE_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        deadline, workers = time.monotonic() + 90, int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1"))
        while self.status("GET", "/ping") != 200 or self.log.count("; ready") < workers:  # each worker loads the model
            assert self.process.poll() is None and time.monotonic() < deadline, self.log
            time.sleep(0.2)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
    ) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.body = response.read()
        connection.close()
        return response

    def status(self, method: str, path: str) -> int:
        try:
            return self.request(method, path, timeout=2).status
        except OSError:
            return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def server(trained_run):
    started = []

    def start(**env) -> Server:
        started.append(Server(trained_run[0] / "model", **env))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def stalled_upload(port: int, sent: int, declared: int) -> socket.socket:
    """A connection that sends its headers and ``sent`` bytes of a ``declared``-byte body, then goes silent."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /invocations HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: image/png\r\nContent-Length: {declared}\r\n\r\n".encode()
        + b"\0" * sent
    )
    return sock


def test_stalled_uploads_hold_no_inference_slot(server, png):
    """100 uploads stalled half-way (more than the 64 requests in flight allowed) leave good clients answered,
    p50 under 1 s; each stalled one is cut off (408) once it falls below the minimum data rate."""
    live = server(SERVE_MIN_BODY_RATE_KBPS="8")
    stalled = [stalled_upload(live.port, 20_000, 40_000) for _ in range(100)]
    try:
        time.sleep(0.5)
        latencies, statuses, until = (
            [],
            [],
            time.monotonic() + 3,
        )  # the stalled uploads are cut after 2 s + 20 kB / 8 kB/s = 4.4 s
        while time.monotonic() < until:
            started = time.perf_counter()
            statuses.append(live.request("POST", "/invocations", png, {"Content-Type": "image/png"}).status)
            latencies.append(time.perf_counter() - started)
        assert set(statuses) == {200} and len(statuses) >= 5, statuses
        assert statistics.median(latencies) < 1.0
        print(
            f"with 100 uploads stalled: {len(statuses)} good requests, all 200, p50 "
            f"{1000 * statistics.median(latencies):.0f} ms"
        )
        time.sleep(3)
        for sock in stalled:
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")  # too slow: told so, and the slot is free again
    finally:
        for sock in stalled:
            sock.close()


def test_a_client_that_hangs_up_is_one_log_line(server):
    live = server()
    sock = stalled_upload(live.port, 1_000, 100_000)
    time.sleep(0.3)
    sock.close()
    time.sleep(1)
    assert live.status("GET", "/ping") == 200
    hung_up = [line for line in live.lines if "hung up" in line]
    assert len(hung_up) == 1 and "Traceback" not in live.log and "Exception in ASGI application" not in live.log, (
        live.log
    )


def slow_request(port: int, png: bytes, seconds: float) -> int:
    """A request whose body takes ``seconds`` to arrive (faster than the minimum rate): in flight meanwhile."""
    body = png + b"\0" * 30_000  # PNG readers stop at IEND: the padding is ignored
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST /invocations HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    pieces = 10
    for i in range(pieces):
        sock.sendall(body[i * len(body) // pieces : (i + 1) * len(body) // pieces])
        time.sleep(seconds / pieces)
    answer = sock.makefile("rb").readline()
    sock.close()
    return int(answer.split()[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_answers_the_requests_in_flight_refuses_new_ones_and_exits_0(server, png, workers):
    """With SAGEMAKER_MODEL_SERVER_WORKERS=2, each worker process drains its own requests."""
    live = server(SAGEMAKER_MODEL_SERVER_WORKERS=str(workers))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(slow_request, live.port, png, 3) for _ in range(6)]
        time.sleep(1)
        signalled = time.monotonic()
        live.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = live.request("POST", "/invocations", png, {"Content-Type": "image/png"})
        assert refused.status == 503 and refused.getheader("Retry-After") == "1" and b"shutting down" in refused.body
        assert [f.result() for f in in_flight] == [200] * 6
    assert live.process.wait(30) == 0
    took = time.monotonic() - signalled
    assert took < 10, live.log
    print(
        f"{workers} worker(s), SIGTERM with 6 requests in flight: 6 x 200, a new request 503 with Retry-After: 1, "
        f"exit code 0 after {took:.1f} s"
    )
    assert live.log.count("SIGTERM: no longer admitting requests") == workers, live.log
    if workers == 1:
        assert "SIGTERM: no longer admitting requests; finishing 6 in progress" in live.log, live.log
