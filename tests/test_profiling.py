"""Profiling: system and step samples written while training, the rules' verdicts, the HTML report in Chromium."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from train.cores import auto_workers
from train.debug.html_report import render
from train.debug.profiler_rules import RULES, Dataloader, Profile, StepOutlier, load_profile


def verdicts_by_rule(output):
    _, verdicts = render(output, {})
    return {v.rule: v for v in verdicts}


def test_a_run_records_samples_and_step_phases(trained_run):
    output = trained_run[0] / "output" / "data"
    profile = load_profile(output / "profiler")
    assert profile.run["device"] == "cpu" and profile.run["workers"] == 0 and profile.run["batch_size"] == 32
    assert len(profile.steps) == 26  # 13 steps an epoch x 2 epochs
    assert all(s["data"] >= 0 and s["forward"] > 0 and s["backward"] > 0 and s["optimizer"] > 0 for s in profile.steps)
    assert {s["epoch"] for s in profile.steps} == {1, 2}
    assert profile.samples and all(
        0 <= s["cpu"] <= 100 and len(s["cores"]) >= 1 and s["gpus"] == [] for s in profile.samples
    )
    assert (output / "profiler-report.html").is_file()


def test_report_renders_its_plots_in_chromium(trained_run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    report = trained_run[0] / "output" / "data" / "profiler-report.html"
    browser.get(report.as_uri())
    assert browser.title == "Profiling report"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert [i.get_attribute("alt") for i in images] == [
        "Loss and accuracy",
        "Reliability on test, before and after temperature scaling",
        "System utilisation",
        "Step time histogram",
        "Where the time goes",
    ]
    for image in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) >= 600
    rows = browser.find_elements(By.CSS_SELECTOR, "#rules tr")[1:]
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
        "LowGPUUtilization",
        "CPUBottleneck",
        "IOBottleneck",
        "BatchSize",
        "StepOutlier",
        "Dataloader",
    ]
    assert "no GPU in this run" in rows[0].text
    browser.save_screenshot(str(tmp_path / "report.png"))


SLOW_TRAINER = """
import sys, time
from train.cli import main
from train.data import ImageDataset
original = ImageDataset.__getitem__
def slow(self, index):
    time.sleep(0.04)
    return original(self, index)
ImageDataset.__getitem__ = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def slow_loader_run(tmp_path_factory, fashion):
    """A trainer process whose dataset sleeps 40 ms an image (20x the model's step per image here), one worker, no
    decoded-image cache (which reads each image once and would hide the slow loader): the loader sets the pace."""
    base = tmp_path_factory.mktemp("slow")
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "64",
        "--workers",
        "1",
        "--epochs",
        "1",
        "--decoded-cache",
        "off",
        "--quantize",
        "off",  # the int8 step reads valid again: more sleeping, nothing the rule judges
        "--profiler-interval",
        "0.1",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
        "--model-dir",
        str(base / "model"),
        "--output-data-dir",
        str(base / "data"),
        "--checkpoint-dir",
        str(base / "ckpt"),
        "--tensorboard-dir",
        str(base / "tb"),
    ]
    result = subprocess.run(
        [sys.executable, "-c", SLOW_TRAINER, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "data"


def test_slow_dataloader_is_flagged_as_a_data_bottleneck(slow_loader_run, trained_run):
    slow = verdicts_by_rule(slow_loader_run)
    assert slow["Dataloader"].status == "IssuesFound", slow["Dataloader"].evidence
    assert (
        "data bottleneck" in slow["Dataloader"].evidence and "the loader itself is slow" in slow["Dataloader"].evidence
    )
    assert slow["CPUBottleneck"].status == "NoIssuesFound"  # sleeping is not CPU work
    assert "data bottleneck" in (slow_loader_run / "profiler-report.html").read_text()
    normal = verdicts_by_rule(trained_run[0] / "output" / "data")
    assert "data bottleneck" not in normal["Dataloader"].evidence


def test_step_outliers_are_counted_against_n_outliers():
    steps = [{"epoch": 1, "data": 0.0, "forward": 0.1, "backward": 0.1, "optimizer": 0.01} for _ in range(200)]
    for s in steps[:12]:
        s["forward"] = 2.0
    profile = Profile([], steps, {"workers": 2, "cores": 2, "batch_size": 32, "device": "cpu", "model": "m"})
    assert StepOutlier().evaluate(profile).status == "IssuesFound"
    assert StepOutlier(n_outliers="12").evaluate(profile).status == "NoIssuesFound"


def test_report_command_and_missing_profile(trained_run, tmp_path):
    output = trained_run[0] / "output" / "data"
    result = subprocess.run(
        [sys.executable, "-m", "train.debug", "report", str(output), "--param", "StepOutlier.n_outliers=1000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        result.returncode == 1 and "report: " in result.stdout and "0 loader workers for" in result.stdout
    )  # --workers 0
    missing = subprocess.run(
        [sys.executable, "-m", "train.debug", "report", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "holds no profile" in missing.stderr
    assert json.loads((output / "metrics.json").read_text())["history"]


def test_no_verdict_prints_nan_when_no_sample_falls_within_a_wait():
    """Short waits between system samples (an ordinary CPU run): the rules say so instead of 'CPU nan%'."""
    steps = [
        {"epoch": 1, "time": 100.0 + i, "data": 0.6, "forward": 0.2, "backward": 0.1, "optimizer": 0.01}
        for i in range(50)
    ]
    samples = [
        {"time": 100.0 + i + 0.2, "cpu": 50.0, "iowait": 0.0, "cores": [50.0], "gpus": []} for i in range(50)
    ]  # never within a wait
    profile = Profile(samples, steps, {"workers": 1, "cores": 2, "batch_size": 32, "device": "cpu", "model": "m"})
    verdicts = [rule().evaluate(profile) for rule in RULES.values()]
    assert all("nan" not in v.evidence.lower() for v in verdicts), [v.evidence for v in verdicts]
    by_rule = {v.rule: v for v in verdicts}
    assert (
        "no CPU to judge" in by_rule["CPUBottleneck"].evidence
        and "no I/O wait to judge" in by_rule["IOBottleneck"].evidence
    )
    assert (
        "CPU and I/O load are unknown" in by_rule["Dataloader"].evidence
    )  # steps waited 60 % of the time: a bottleneck, cause unknown


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 64])
def test_the_dataloader_rule_never_flags_what_workers_auto_picks(cores):
    steps = [
        {"epoch": 1, "time": float(i), "data": 0.0, "forward": 0.2, "backward": 0.1, "optimizer": 0.01}
        for i in range(20)
    ]
    run = {"workers": auto_workers(cores), "cores": cores, "batch_size": 32, "device": "cpu", "model": "m"}
    assert Dataloader().evaluate(Profile([], steps, run)).status == "NoIssuesFound"
    fewer = Dataloader().evaluate(Profile([], steps, {**run, "workers": auto_workers(cores) - 1}))
    assert cores == 1 or (
        fewer.status == "IssuesFound" and f"raise --workers to {auto_workers(cores)}" in fewer.evidence
    )
