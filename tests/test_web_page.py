"""The web page in headless Chromium: upload a real photo, the top-5 list, the latency, the model's description
and the class activation map overlay appear."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from test_container import wait_for_ping
from test_serve_container import free_port

selenium = pytest.importorskip("selenium", reason="pip install selenium")


@pytest.fixture(scope="module")
def server(trained_run):
    """``python -m serve`` on a free 127.0.0.1 port with the trained artifact."""
    port = free_port()
    env = {**os.environ, "SAGEMAKER_MODEL_DIR": str(trained_run[0] / "model"), "SAGEMAKER_BIND_TO_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "serve"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_upload_shows_top5_and_latency(server, fashion, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server + "/")
    assert driver.title == "byoc-vision classifier"
    photo = next((fashion / "test" / "Sneaker").iterdir())
    driver.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.prediction")) == 5)
    items = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "li.prediction")]
    classes = {p.name for p in (fashion / "train").iterdir()}
    for text in items:
        label, share = text.rsplit(" ", 1)
        assert label in classes and share.endswith("%")
    assert driver.find_element(By.ID, "latency").text.endswith("ms round trip")
    assert driver.find_element(By.ID, "error").text == ""
    # what is loaded, from model.json, and where the model looked (the class activation map over the photo)
    described = driver.find_element(By.ID, "model").text
    assert (
        described.startswith("resnet18, 10 classes")
        and "test accuracy" in described
        and "calibration error (ECE)" in described
    )
    assert re.search(r"served by openvino in (int8|bf16|fp32)", described), described  # what SERVE_PRECISION=auto chose
    overlay = driver.find_element(By.ID, "overlay")
    WebDriverWait(driver, 10).until(
        lambda d: overlay.is_displayed() and overlay.get_attribute("naturalWidth") not in (None, "0")
    )
    assert (
        overlay.get_attribute("src").startswith("data:image/png;base64,")
        and int(overlay.get_attribute("naturalWidth")) == 28
    )
    assert driver.find_element(By.ID, "overlay-caption").text.startswith('where the model saw "')
    driver.save_screenshot(str(tmp_path / "page.png"))
