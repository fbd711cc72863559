"""Every environment variable the server reads, in one place (names as the SageMaker toolkits define them)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from byoc_contract import recheck
from byoc_machine import usable_cores

RUNTIMES = ("openvino", "onnxruntime", "torch")  # the default first: measured fastest (docs/benchmarks.md)
DECODES = ("auto", "scaled", "exact")  # auto: as model.json's preprocess.decode says training evaluated the model
PRECISIONS = (
    "auto",
    "int8",
    "bf16",
    "fp32",
)  # auto: int8 when the artifact has it and the CPU has VNNI/AMX, else bf16 where it can, else fp32


MAX_SHUTDOWN_GRACE = (
    25  # SIGTERM -> SIGKILL is 30 s on SageMaker; the rest of the shutdown takes at most 3 s (serve.__main__)
)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # SageMaker's multi-model names; also SERVE_MODEL_NAME


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={value} must be between 0 and 1")
    return value


SAFE_PORT_RANGE = re.compile(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*")


def _backend_port(env: Mapping[str, str], bind_port: int) -> int:
    """The multi-model backend's private port: SERVE_MME_BACKEND_PORT; else, in an inference pipeline, where the
    containers share one network, a port of SAGEMAKER_SAFE_PORT_RANGE other than the one we listen on; else 9080."""
    if env.get("SERVE_MME_BACKEND_PORT", ""):
        return _int(env, "SERVE_MME_BACKEND_PORT", 9080)
    raw = env.get("SAGEMAKER_SAFE_PORT_RANGE", "")
    if not raw:
        return 9080
    match = SAFE_PORT_RANGE.fullmatch(raw)
    low, high = (int(match[1]), int(match[2])) if match else (0, -1)
    if not 1 <= low <= high <= 65535:
        raise SettingsError(f"SAGEMAKER_SAFE_PORT_RANGE={raw!r}: expected LOW-HIGH ports, e.g. 8100-8200")
    free = [port for port in range(low, min(high, low + 1) + 1) if port != bind_port]
    if not free:
        raise SettingsError(
            f"SAGEMAKER_SAFE_PORT_RANGE={raw!r} has no port besides SAGEMAKER_BIND_TO_PORT={bind_port}; set "
            "SERVE_MME_BACKEND_PORT"
        )
    return free[0]


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "false").strip().lower()
    if raw not in ("true", "false", ""):
        raise SettingsError(f"{name}={raw!r}: use true or false")
    return raw == "true"


def _on_off(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "on").strip().lower()
    if raw not in ("on", "off"):
        raise SettingsError(f"{name}={raw!r}: use on or off")
    return raw == "on"


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    port: int
    workers: int
    timeout_seconds: int
    max_payload_bytes: int
    max_pixels: int
    runtime: str
    precision: str
    recheck_margin: float
    threads: int
    default_top_k: int
    max_batch_images: int
    max_batch_delay_ms: int
    allow_image_urls: bool
    program: str
    code_packages_dir: Path
    multi_model: bool
    backend_port: int
    models_root: Path
    requirements_timeout_seconds: int
    max_images_per_request: int
    max_concurrent_requests: int
    max_queued_images: int
    body_timeout_seconds: int
    worker_threads: int
    max_image_urls: int
    image_url_timeout_seconds: int
    allow_private_image_urls: bool
    model_name: str
    calibrated: bool
    max_explain_pixels: int
    explain_max_side: int
    max_concurrent_uploads: int
    max_upload_buffer_bytes: int
    min_body_rate: float  # bytes/s
    shutdown_grace_seconds: int
    malloc_trim: bool
    staging_dir: Path
    decode: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        runtime = env.get("SERVE_RUNTIME", RUNTIMES[0])
        if runtime not in RUNTIMES:
            raise SettingsError(f"SERVE_RUNTIME={runtime!r}: choose one of {', '.join(RUNTIMES)}")
        precision = env.get("SERVE_PRECISION", "auto")
        cores = usable_cores()  # the default of both thread pools
        if precision not in PRECISIONS or (precision in ("int8", "bf16") and runtime != "openvino"):
            raise SettingsError(
                f"SERVE_PRECISION={precision!r}: use auto or fp32, or int8 / bf16 with SERVE_RUNTIME=openvino"
            )
        port = _int(env, "SAGEMAKER_BIND_TO_PORT", 8080)
        settings = cls(
            model_dir=Path(env.get("SAGEMAKER_MODEL_DIR", "/opt/ml/model")),
            port=port,
            workers=_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1),
            timeout_seconds=_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60),
            max_payload_bytes=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6) * 1024 * 1024,
            max_pixels=_int(env, "SERVE_MAX_IMAGE_PIXELS", 40_000_000),
            runtime=runtime,
            precision=precision,
            recheck_margin=_float(env, "SERVE_BF16_RECHECK_MARGIN", recheck.DEFAULT_MARGIN),
            threads=_int(env, "SERVE_THREADS", cores),
            default_top_k=_int(env, "SERVE_TOP_K", 5),
            max_batch_images=_int(env, "SERVE_MAX_BATCH_SIZE", 16),
            max_batch_delay_ms=_int(env, "SERVE_MAX_BATCH_DELAY_MS", 2, minimum=0),
            allow_image_urls=_bool(env, "SERVE_ALLOW_IMAGE_URLS"),
            program=env.get("SAGEMAKER_PROGRAM", "inference.py"),
            code_packages_dir=Path(env.get("SERVE_CODE_PACKAGES_DIR", "/tmp/byoc-code-packages")),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL"),
            backend_port=_backend_port(env, port),
            models_root=Path(env.get("SERVE_MULTI_MODEL_ROOT", "/opt/ml/models")),
            requirements_timeout_seconds=_int(env, "SERVE_REQUIREMENTS_TIMEOUT_SECONDS", 600),
            max_images_per_request=_int(env, "SERVE_MAX_IMAGES_PER_REQUEST", 64),
            max_concurrent_requests=_int(env, "SERVE_MAX_CONCURRENT_REQUESTS", 64),
            max_queued_images=_int(env, "SERVE_MAX_QUEUED_IMAGES", 256),
            body_timeout_seconds=_int(env, "SERVE_BODY_READ_TIMEOUT_SECONDS", 20),
            worker_threads=_int(env, "SERVE_WORKER_THREADS", cores),
            max_image_urls=_int(env, "SERVE_MAX_IMAGE_URLS_PER_REQUEST", 8),
            image_url_timeout_seconds=_int(env, "SERVE_IMAGE_URL_TIMEOUT_SECONDS", 5),
            allow_private_image_urls=_bool(env, "SERVE_IMAGE_URL_ALLOW_PRIVATE"),
            model_name=env.get("SERVE_MODEL_NAME", "model"),
            calibrated=_on_off(env, "SERVE_CALIBRATION"),
            max_explain_pixels=_int(env, "SERVE_MAX_EXPLAIN_PIXELS", 40_000_000),
            explain_max_side=_int(env, "SERVE_EXPLAIN_MAX_SIDE", 1024, minimum=64),
            max_concurrent_uploads=_int(env, "SERVE_MAX_CONCURRENT_UPLOADS", 1024),
            max_upload_buffer_bytes=_int(env, "SERVE_MAX_UPLOAD_BUFFER_MB", 1024) * 1024 * 1024,
            min_body_rate=_int(env, "SERVE_MIN_BODY_RATE_KBPS", 32, minimum=0) * 1024.0,
            shutdown_grace_seconds=_int(env, "SERVE_SHUTDOWN_GRACE_SECONDS", 20, minimum=0),
            malloc_trim=_on_off(env, "SERVE_MALLOC_TRIM"),
            staging_dir=Path(env.get("SERVE_STAGING_DIR", "/tmp/byoc-staged-models")),
            decode=env.get("SERVE_DECODE", "auto").strip().lower() or "auto",
        )
        if settings.decode not in DECODES:
            raise SettingsError(
                f"SERVE_DECODE={settings.decode!r}: use auto (as the model was evaluated), scaled, or exact (every "
                "pixel, as older artifacts were)"
            )
        if not MODEL_NAME.match(settings.model_name):
            raise SettingsError(
                f"SERVE_MODEL_NAME={settings.model_name!r}: use 1 to 128 letters, digits, '.', '_' or '-', starting "
                "with a letter or digit"
            )
        if settings.shutdown_grace_seconds > MAX_SHUTDOWN_GRACE:
            raise SettingsError(
                f"SERVE_SHUTDOWN_GRACE_SECONDS={settings.shutdown_grace_seconds}: at most {MAX_SHUTDOWN_GRACE} "
                "(SageMaker kills the container 30 s after SIGTERM)"
            )
        if settings.max_images_per_request > settings.max_queued_images:
            raise SettingsError(
                f"SERVE_MAX_IMAGES_PER_REQUEST={settings.max_images_per_request} exceeds "
                f"SERVE_MAX_QUEUED_IMAGES={settings.max_queued_images}: no such request could ever run"
            )
        return settings
