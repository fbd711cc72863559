"""moto_server on a free 127.0.0.1 port: the AWS APIs the launcher calls, over real HTTP."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

# Every request the launcher built while a stand-in ran, in order: (service, operation, parameters), recorded before
# the launcher's own check against botocore's model (test_launch_requests checks them against the IAM policy).
CALLS: list[tuple[str, str, dict]] = []
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server():
    """Yields the environment (endpoint URL, dummy credentials) under which boto3 talks to a fresh moto_server, with
    SageMaker's UpdateEndpoint and binary runtime bodies added (``moto_extensions``).

    The server records every request it gets (moto's recorder) into the file named by ``MOTO_RECORDER_FILEPATH``.
    """
    command = [sys.executable, str(Path(__file__).with_name("moto_extensions.py"))]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="moto-") as folder:
        recording, log_path = Path(folder, "requests.jsonl"), Path(folder, "server.log")
        env = {**os.environ, "MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(recording)}
        with log_path.open(
            "wb"
        ) as log:  # a file, not a pipe: nobody reads it while tests run, and a full pipe blocks the server
            process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"moto_server did not start: {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.1)
            yield {"AWS_ENDPOINT_URL": url, "MOTO_RECORDER_FILEPATH": str(recording), **CREDENTIALS}
        finally:
            process.terminate()
            process.wait(10)


def plain(value):
    """``value`` with streams (S3 uploads) replaced by a marker: a copy that outlives the request."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return "<stream>" if hasattr(value, "read") else value


def record(params: dict, model, **_) -> None:
    CALLS.append((model.service_model.service_name, model.name, plain(params)))


@contextmanager
def recording():
    """Every session the launcher makes records the requests its clients build into ``CALLS``."""
    from sagemaker_launch import aws

    original = aws.session

    def session(region):
        made = original(region)
        made.events.register_first("before-parameter-build", record)
        return made

    aws.session = session
    try:
        yield CALLS
    finally:
        aws.session = original


def queue_answers(env: dict, kind: str, results: list[dict]) -> None:
    """Tell moto_server what its SageMaker runtime answers next (``endpoint-results`` or ``async-endpoint-results``)."""
    request = urllib.request.Request(
        f"{env['AWS_ENDPOINT_URL']}/moto-api/static/sagemaker/{kind}",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).close()


def recorded_requests(env: dict, path_part: str = "", target: str = "") -> list[dict]:
    """The requests moto_server got whose URL contains ``path_part`` and whose X-Amz-Target ends with ``target``; bodies
    decoded."""
    path = Path(env["MOTO_RECORDER_FILEPATH"])
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    found = []
    for entry in entries:
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        if path_part in entry["url"] and headers.get("x-amz-target", "").endswith(target):
            body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else (entry.get("body") or "").encode()
            found.append({"method": entry["method"], "url": entry["url"], "headers": headers, "body": body})
    return found


@contextmanager
def environment(values: dict[str, str]):
    """``os.environ`` with ``values`` for the duration (for in-process boto3 clients)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m sagemaker_launch <argv>`` in-process (so it talks to the moto_server in ``os.environ``): exit code,
    stdout, stderr."""
    from sagemaker_launch import cli

    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err
