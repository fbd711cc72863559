"""Debian's docker-registry (the CNCF distribution registry) on a free 127.0.0.1 port, with htpasswd logins."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import bcrypt
from aws_stand_in import free_port

CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: byoc-vision-test
    path: {root}/htpasswd
"""


def available() -> str | None:
    """None when the registry binary is installed, else the reason to skip."""
    return (
        None
        if shutil.which("docker-registry")
        else "Debian's docker-registry is not installed (apt-get install docker-registry)"
    )


@contextmanager
def docker_registry(username: str, password: str):
    """Yields ``127.0.0.1:<port>`` of a fresh registry that accepts only ``username``/``password``."""
    with tempfile.TemporaryDirectory(prefix="registry-") as root:
        port = free_port()
        Path(root, "htpasswd").write_text(
            f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        )
        Path(root, "config.yml").write_text(CONFIG.format(root=root, port=port))
        process = subprocess.Popen(
            [shutil.which("docker-registry"), "serve", f"{root}/config.yml"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                except urllib.error.HTTPError as exc:  # 401: up, and asking for a login
                    if exc.code == 401:
                        break
                    time.sleep(0.1)
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"docker-registry did not start: {process.stderr.read().decode()[-2000:]}"
                        ) from None
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(10)
