"""Local tuning with Optuna over the launcher's YAML search space, on real Fashion-MNIST photos."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

optuna = pytest.importorskip("optuna", reason="optuna is part of the train extra")
import sqlalchemy  # noqa: E402  (optuna's dependency)


def trainer_args(fashion, epochs):
    return [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--workers",
        "0",
        "--epochs",
        str(epochs),
        "--profiler-interval",
        "0",
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
    ]


def tuner(study, space, *options, fashion, epochs=2):
    return [
        sys.executable,
        "-m",
        "train.tune",
        "--search-space",
        str(space),
        "--study-dir",
        str(study),
        *options,
        "--",
        *trainer_args(fashion, epochs),
    ]


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_grid_search_runs_every_combination_and_keeps_the_best(tmp_path, fashion):
    space = tmp_path / "space.yaml"
    space.write_text(
        "batch-size: {type: categorical, values: [16, 32]}\noptimizer: {type: categorical, values: [adamw, sgd]}\n"
    )
    study = tmp_path / "study"
    result = subprocess.run(
        tuner(study, space, "--strategy", "Grid", "--max-jobs", "4", "--max-parallel-jobs", "2", fashion=fashion),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(study / "results.csv")
    assert sorted((r["batch-size"], r["optimizer"]) for r in rows) == [
        ("16", "adamw"),
        ("16", "sgd"),
        ("32", "adamw"),
        ("32", "sgd"),
    ]
    assert all(r["state"] == "COMPLETE" and r["epochs"] == "2" for r in rows)
    best = max(rows, key=lambda r: float(r["valid_acc"]))
    assert f"best: slot {best['slot']} valid_acc={float(best['valid_acc']):.4f}" in result.stdout
    assert (study / "best" / "model" / "model.onnx").is_file() and (study / "best" / "model" / "model.json").is_file()
    kept = [p.parent.name for p in (study / "trials").glob("*/model")]
    assert kept == [f"{int(best['slot']):03d}"]  # only the best trial's artifact is kept
    logs = [(study / "trials" / f"{int(r['slot']):03d}" / "train.log").read_text() for r in rows]
    # trials share the study's decoded-image cache: train and valid decoded once in all, every other trial reads them
    assert sum(log.count("decoded once into " + str(study / "decoded-cache")) for log in logs) == 2
    assert sum(log.count("decoded-image cache: reusing") for log in logs) == 2 * (len(rows) - 1)


def test_a_failing_trial_is_recorded_with_its_reason(tmp_path, fashion):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer: {type: categorical, values: [adamw, adagrad]}\n")
    study = tmp_path / "study"
    result = subprocess.run(
        tuner(study, space, "--strategy", "Grid", "--max-jobs", "2", fashion=fashion, epochs=1),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["optimizer"]: r for r in read_csv(study / "results.csv")}
    assert {k: r["state"] for k, r in rows.items()} == {"adamw": "COMPLETE", "adagrad": "FAIL"}
    assert "failed: Bad hyperparameter or flag" in result.stdout and "invalid choice: 'adagrad'" in result.stdout
    failed = study / "trials" / f"{int(rows['adagrad']['slot']):03d}"
    assert "adagrad" in (failed / "output" / "failure").read_text()  # the trial's own /opt/ml tree


def study_state(db):
    study = optuna.load_study(study_name="byoc-vision", storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def retried(trials) -> set[int]:
    """Numbers of the trials a later trial runs again (Optuna's heartbeat retry records them)."""
    return {n for t in trials for n in optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)}


def second_trial_mid_epoch(db, timeout: float = 600) -> tuple[list, list]:
    """(finished trials, running ones with an epoch reported), once a trial is done and the next has finished an
    epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = study_state(db)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the tuner is still creating the study
            trials = []
        done = [t for t in trials if t.state.name == "COMPLETE"]
        running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
        if done and running:
            return done, running
        time.sleep(0.5)
    pytest.fail("the tuner never reached its second trial")


def test_killed_tuner_resumes_without_losing_or_repeating_a_trial(tmp_path, fashion):
    space = tmp_path / "space.yaml"
    space.write_text(
        "lr: {type: continuous, min: 1e-4, max: 1e-2, scaling: Logarithmic}\nbatch-size: {type: categorical, values: "
        "[16, 32]}\n"
    )
    study = tmp_path / "study"
    command = tuner(
        study,
        space,
        "--max-jobs",
        "3",
        "--max-parallel-jobs",
        "1",
        "--seed",
        "3",
        "--heartbeat-seconds",
        "2",
        fashion=fashion,
        epochs=3,
    )
    first = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        done, running = second_trial_mid_epoch(study / "study.db")
    finally:
        os.killpg(
            first.pid, signal.SIGKILL
        )  # the tuner and its trainer, as a machine loss would (or as the test fails)
        first.wait()
    cut = running[0].user_attrs["slot"]
    finished_before = {t.user_attrs["slot"]: t.datetime_complete for t in done}

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"trial slot {cut}: " in second.stderr and "(run again: resumes from its last checkpoint)" in second.stderr
    trials = study_state(study / "study.db")
    kept = [t for t in trials if t.number not in retried(trials)]
    slots = [t.user_attrs["slot"] for t in kept]
    assert len(slots) == len(set(slots)) == 3 and cut in slots  # none lost, none twice
    assert all(t.state.name == "COMPLETE" for t in kept)
    for t in kept:
        if t.user_attrs["slot"] in finished_before:  # finished trials were not run again
            assert t.datetime_complete == finished_before[t.user_attrs["slot"]]
    [superseded] = [t for t in trials if t.number in retried(trials)]
    [resumed] = [t for t in kept if t.user_attrs["slot"] == cut]
    assert resumed.params == superseded.params and superseded.state.name == "FAIL"
    assert "resuming from" in (study / "trials" / f"{cut:03d}" / "train.log").read_text()
    rows = read_csv(study / "results.csv")
    assert len(rows) == 3 and [r["resumed"] for r in rows if int(r["slot"]) == cut] == ["True"]


@pytest.mark.parametrize(
    "space, options, message",
    [
        (
            "lr: {type: continuous, min: 0.001, max: 0.1}\n",
            ["--strategy", "Grid"],
            "Grid searches categorical ranges only",
        ),
        (
            "lr: {type: continuous, min: 0.001, max: 0.1, scaling: ReverseLogarithmic}\n",
            [],
            "ReverseLogarithmic scaling is SageMaker's only",
        ),
        ("lr: {type: continuous, min: 0.1, max: 0.001}\n", [], "min (0.1) must be below max (0.001)"),
        ("epochs: {type: integer, min: 1, max: 3}\n", [], "epochs is both tuned and fixed"),
        (
            "lr: {type: continuous, min: 0.001, max: 0.1}\n",
            ["--", "--model-dir", "/tmp/m"],
            "--model-dir: every trial writes under",
        ),
    ],
)
def test_bad_search_space_exits_2(tmp_path, fashion, space, options, message):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    result = subprocess.run(
        tuner(tmp_path / "study", path, *options, fashion=fashion),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("how", ["file", "env"])
def test_storage_url_from_a_file_or_the_environment_never_shows_its_password(tmp_path, fashion, how):
    """A database password stays out of argv (--storage-file, $TUNE_STORAGE_URL) and out of every message."""
    space = tmp_path / "space.yaml"
    space.write_text("batch-size: {type: categorical, values: [16]}\n")
    url = "postgresql+psycopg2://tuner:s3cr3t-pw@127.0.0.1:1/tuning"  # nothing listens on port 1: the connection fails
    env = {k: v for k, v in os.environ.items() if k != "TUNE_STORAGE_URL"}
    options = []
    if how == "file":
        (tmp_path / "storage").write_text(url + "\n")
        options = ["--storage-file", str(tmp_path / "storage")]
    else:
        env["TUNE_STORAGE_URL"] = url
    command = tuner(tmp_path / "study", space, *options, fashion=fashion)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "s3cr3t-pw" not in result.stderr + result.stdout and "s3cr3t-pw" not in " ".join(command)
    assert "cannot open the study storage postgresql+psycopg2://tuner:***@127.0.0.1:1/tuning" in result.stderr


def test_storage_given_twice_is_refused(tmp_path, fashion):
    space = tmp_path / "space.yaml"
    space.write_text("batch-size: {type: categorical, values: [16]}\n")
    command = tuner(tmp_path / "study", space, "--storage", "sqlite:///x.db", fashion=fashion)
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TUNE_STORAGE_URL": "sqlite:///y.db"},
    )
    assert result.returncode == 2 and "--storage and $TUNE_STORAGE_URL both name a storage; give one." in result.stderr
