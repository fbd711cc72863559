"""What the SageMaker Python SDK tests share: telemetry off, dummy credentials, a loopback-only serving port, and the
cached virtual environments for clients that cannot share ours (SDK v2 and v3 cannot share one environment)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from aws_stand_in import CREDENTIALS

TELEMETRY_OFF = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker"
SDK_V2 = ("sagemaker>=2.200,<3", "pillow>=10", "setuptools<82")


class LoopbackPort(int):
    """The SDK's serving port: a number to the SDK's HTTP client, ``127.0.0.1:<port>`` in the compose file or the
    ``ports`` it writes. Local mode publishes the serving container on every interface; this keeps it on loopback."""

    def __str__(self) -> str:
        return f"127.0.0.1:{int(self)}"


def sdk_environment(folder: Path) -> dict[str, str]:
    """Environment for an SDK run: dummy credentials, telemetry off, no AWS endpoint override, no v2 warning."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sdk.yaml").write_text(TELEMETRY_OFF)
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    return {
        **env,
        **CREDENTIALS,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(folder / "sdk.yaml"),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }


def cached_python(name: str, requirements: tuple[str, ...]) -> Path:
    """The Python of a virtual environment holding ``requirements``, created once per requirement set under ~/.cache
    and reused (for clients whose pins clash with ours: SDK v2, KServe's SDK)."""
    key = hashlib.sha256(" ".join((*requirements, sys.version)).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "byoc-vision" / f"{name}-{key}"
    python, ready = root / "bin" / "python", root / ".ready"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                check=True,
                timeout=900,
            )
            ready.touch()
    return python


def sdk_v2_python() -> Path:
    """The Python of the cached environment with SDK v2."""
    return cached_python("sagemaker-v2", SDK_V2)
