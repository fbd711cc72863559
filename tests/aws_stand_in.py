"""moto_server on a free 127.0.0.1 port: the AWS APIs the launcher calls, over real HTTP."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server():
    """Yields the environment (endpoint URL, dummy credentials) under which boto3 talks to a fresh moto_server."""
    executable = Path(sys.executable).with_name("moto_server")
    command = [str(executable)] if executable.exists() else [shutil.which("moto_server") or "moto_server"]
    port = free_port()
    process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {process.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield {"AWS_ENDPOINT_URL": url, **CREDENTIALS}
    finally:
        process.terminate()
        process.wait(10)


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
