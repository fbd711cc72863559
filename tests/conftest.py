"""Shared fixtures: real Fashion-MNIST datasets, a SageMaker /opt/ml tree, the Docker engine and images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fashion_mnist
from aws_stand_in import environment, moto_server, recording

from sagemaker_launch import images

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    # the IAM coverage test reads what every launcher test before it called: it runs last
    items.sort(key=lambda item: item.get_closest_marker("after_launcher_tests") is not None)
    if not fashion_mnist.available():
        skip = pytest.mark.skip(reason="Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
        for item in items:
            if "fashion" in item.fixturenames or "opt_ml" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion(tmp_path_factory) -> Path:
    """train (40/class), valid (10/class), test (10/class, from the t10k set) as ImageFolder PNGs."""
    root = tmp_path_factory.mktemp("fashion")
    fashion_mnist.write_imagefolder(root / "train", "train", 40)
    fashion_mnist.write_imagefolder(root / "valid", "train", 10, offset=40)
    fashion_mnist.write_imagefolder(root / "test", "t10k", 10)
    return root


def make_opt_ml(root: Path, data: Path | None, hyperparameters: dict, channels=("train", "valid", "test")) -> Path:
    """A SageMaker-style /opt/ml tree with the given channels copied from ``data``."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(json.dumps({c: {"TrainingInputMode": "File"} for c in channels}))
    for channel in channels:
        target = root / "input" / "data" / channel
        if data is not None and (data / channel).is_dir():
            shutil.copytree(data / channel, target)
        else:
            target.mkdir(parents=True)
    return root


@pytest.fixture
def opt_ml(tmp_path, fashion):
    """Factory: ``opt_ml(hyperparameters, channels=...)`` -> a filled /opt/ml tree."""
    return lambda hyperparameters, channels=("train", "valid", "test"): make_opt_ml(
        tmp_path / "opt_ml", fashion, hyperparameters, channels
    )


def run_trainer(
    args: list[str], base_dir: Path, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m train`` as a subprocess with /opt/ml at ``base_dir``."""
    full_env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def expected_artifact_files(model_dir: Path) -> set[str]:
    """The files a CPU training run writes to ``model_dir``: the int8 model's two only when its gate shipped them."""
    int8 = (
        {"model_int8.xml", "model_int8.bin"}
        if json.loads((model_dir / "model.json").read_text())["int8"]["shipped"]
        else set()
    )
    return {"model.onnx", "model.json", "weights.safetensors", "metrics.json", "cam_head.npz"} | int8


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fashion) -> tuple[Path, subprocess.CompletedProcess]:
    """One real 2-epoch resnet18 run at 32 px: (its /opt/ml folder, the finished process)."""
    base = tmp_path_factory.mktemp("opt_ml")
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--epochs",
        "2",
    ]
    args += [a for split in ("train", "valid", "test") for a in (f"--{split}", str(fashion / split))]
    result = run_trainer(args, base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base, result


def docker_available() -> str | None:
    """None when a Docker engine answers, else the reason to skip."""
    if shutil.which("docker") is None:
        return "no docker CLI (run ../shared/container-host/up.sh)"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True)
    return (
        None
        if result.returncode == 0
        else f"no Docker engine answers (run ../shared/container-host/up.sh): {result.stderr.strip()[:200]}"
    )


def build_image(kind: str, tag: str, **build_args: str) -> str:
    """Build one of the project's images with the launcher's `build` (skipping the test when there is no Docker
    engine)."""
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    return images.build(kind, tag, REPO, build_args=build_args, quiet=True)


@pytest.fixture(scope="session")
def train_image() -> str:
    """The training image, built from docker/train.Dockerfile with PyPI's torch wheels."""
    index = os.environ.get("TORCH_INDEX_URL", "https://pypi.org/simple")
    return build_image("train", "test", TORCH_INDEX_URL=index)


@pytest.fixture(scope="session")
def torch_serve_image() -> str:
    """The torch flavour of the serving image (FLAVOUR=torch), with PyPI's torch wheels."""
    index = os.environ.get("TORCH_INDEX_URL", "https://pypi.org/simple")
    return build_image("serve", "torch-test", FLAVOUR="torch", TORCH_INDEX_URL=index)


@pytest.fixture(scope="session")
def serve_image() -> str:
    """The serving image, built from docker/serve.Dockerfile."""
    return build_image("serve", "test")


@pytest.fixture(scope="module")
def aws():
    """A fresh moto_server for the module, with ``os.environ`` pointing boto3 at it, the launcher's requests recorded
    (``aws_stand_in.CALLS``); yields that environment."""
    with moto_server() as env, environment(env), recording():
        yield env


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium (Debian's chromium and chromium-driver)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("apt-get install chromium chromium-driver")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
