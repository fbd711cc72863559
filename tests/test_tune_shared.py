"""``python -m train.tune --storage postgresql://...``: tuners sharing one study in a real PostgreSQL server (Debian's
``postgresql`` package, started on 127.0.0.1 for the test and removed after)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aws_stand_in import free_port
from conftest import REPO
from test_tune_local import tuner

optuna = pytest.importorskip("optuna", reason="optuna is part of the train extra")
pytest.importorskip("psycopg2", reason="psycopg2-binary is part of the train extra")
import sqlalchemy  # noqa: E402  (optuna's dependency)

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


@pytest.fixture
def postgres():
    """A fresh PostgreSQL cluster on a free 127.0.0.1 port; yields its SQLAlchemy URL."""
    if not BINARIES:
        pytest.skip("no PostgreSQL server: apt-get install postgresql")
    bindir = BINARIES[-1].parent
    root = Path(tempfile.mkdtemp(prefix="byoc-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses to run as root
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    try:
        subprocess.run(
            [*as_user, bindir / "initdb", "-D", data, "-U", "byoc", "--auth=trust"], check=True, capture_output=True
        )
        options = f"-p {port} -h 127.0.0.1 -k {root}"
        subprocess.run(
            [*as_user, bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_user, bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "byoc", "tuning"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://byoc@127.0.0.1:{port}/tuning"
    finally:
        subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def space_file(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(
        "lr: {type: continuous, min: 1e-4, max: 1e-2, scaling: Logarithmic}\nbatch-size: {type: categorical, values: "
        "[16, 32]}\n"
    )
    return space


def counted(url: str) -> list:
    """The study's trials minus those run again under a later one (the tuner's own rule)."""
    trials = optuna.load_study(study_name="byoc-vision", storage=url).get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [
        t
        for t in trials
        if t.number not in retried and not t.user_attrs.get("surplus") and not t.user_attrs.get("superseded")
    ]


def started_slots(stderr: str) -> list[int]:
    return [
        int(line.split("trial slot ")[1].split(":")[0])
        for line in stderr.splitlines()
        if "trial slot " in line and ": --" in line
    ]


def test_two_tuners_share_one_study_and_stop_together_at_max_jobs(tmp_path, fashion, postgres):
    command = tuner(
        tmp_path / "study",
        space_file(tmp_path),
        "--storage",
        postgres,
        "--max-jobs",
        "4",
        "--heartbeat-seconds",
        "2",
        fashion=fashion,
    )
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=False):
        assert process.returncode == 0, stderr[-3000:]
    per_process = [started_slots(stderr) for _, stderr in outputs]
    print(f"trial slots started by each tuner: {per_process}")
    assert all(per_process), per_process  # both tuners ran trials
    assert sorted(per_process[0] + per_process[1]) == sorted(set(per_process[0] + per_process[1]))  # no slot run twice
    kept = counted(postgres)
    assert len(kept) == 4 and all(t.state.name == "COMPLETE" for t in kept)
    assert sorted(t.user_attrs["slot"] for t in kept) == sorted(per_process[0] + per_process[1])
    for t in kept:  # each trial trained once: one line per epoch in its log
        log = (tmp_path / "study" / "trials" / f"{t.user_attrs['slot']:03d}" / "train.log").read_text()
        assert log.count("epoch=1 ") == 1 and log.count("epoch=2 ") == 1


def trial_mid_epoch(url: str, timeout: float = 600) -> list:
    """The running trials with an epoch reported, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            mid = [t for t in counted(url) if t.state.name == "RUNNING" and t.intermediate_values]
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the tuner has not created the study yet
            mid = []
        if mid:
            return mid
        time.sleep(0.5)
    pytest.fail("the first tuner never finished an epoch")


def test_a_killed_tuner_s_trial_is_finished_by_the_other_and_a_restart_has_nothing_left(tmp_path, fashion, postgres):
    study = tmp_path / "study"
    command = tuner(
        study,
        space_file(tmp_path),
        "--storage",
        postgres,
        "--max-jobs",
        "3",
        "--heartbeat-seconds",
        "2",
        fashion=fashion,
        epochs=3,
    )
    victim = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        mid = trial_mid_epoch(postgres)
        survivor = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        os.killpg(
            victim.pid, signal.SIGKILL
        )  # the tuner and its trainer, as a machine loss would (or as the test fails)
        victim.wait()
    cut = mid[0].user_attrs["slot"]
    _, stderr = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, stderr[-3000:]
    assert f"trial slot {cut}: " in stderr and "(run again: resumes from its last checkpoint)" in stderr
    kept = counted(postgres)
    slots = [t.user_attrs["slot"] for t in kept]
    assert len(slots) == len(set(slots)) == 3 and cut in slots and all(t.state.name == "COMPLETE" for t in kept)
    [again] = [t for t in kept if t.user_attrs["slot"] == cut]
    print(
        f"killed mid-trial: slot {cut} (trial {mid[0].number}); run again as trial {again.number} by the other tuner; "
        f"finished slots {sorted(slots)}"
    )
    assert again.system_attrs["retry_history"] == [mid[0].number] and again.params == mid[0].params
    assert "resuming from" in (study / "trials" / f"{cut:03d}" / "train.log").read_text()

    restart = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0 and "the study has 3 finished trials" in restart.stderr
    assert len(counted(postgres)) == 3 and "trial slot" not in restart.stderr


OPEN_AT = """
import sys, time
import optuna, psycopg2, sqlalchemy.dialects.postgresql  # imported before the wait: the opening itself is what races
from train.tune import open_study
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every process opens at the same instant
study = open_study(sys.argv[1], "byoc-vision", heartbeat_seconds=2, maximize=True)
print(study.study_name)
"""


def test_tuners_started_together_on_a_fresh_database_all_open_the_one_study(postgres):
    at = time.time() + 6  # after every interpreter has imported optuna
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, postgres, str(at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(12)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0 and stdout.strip() == "byoc-vision", stderr[-2000:]
    assert [s.study_name for s in optuna.get_all_study_summaries(storage=postgres)] == ["byoc-vision"]
