"""``python -m train.tune``: hyperparameter tuning on this machine with Optuna, over the same YAML search space
as ``sagemaker_launch tune``, each trial a run of ``python -m train``.

    python -m train.tune --search-space space.yaml --study-dir runs/tune --max-jobs 8 --max-parallel-jobs 2 \\
        -- --train data/train --valid data/valid --epochs 5

Each trial is a separate ``python -m train`` process, the command the training container runs: trials get
their own memory and threads, run truly in parallel, one crash does not take the study down, and a pruned
trial is stopped with SIGTERM like SageMaker stops a job. Its metric lines are read as SageMaker's metric
definitions read them.

The study lives in ``<study-dir>/study.db`` (SQLite), or in any database Optuna's RDB storage takes
(``--storage postgresql://...``): tuners on several machines then share one study and stop together at
``--max-jobs``. Each tuner beats a heartbeat for its running trials; a trial whose tuner stopped (Ctrl-C, a kill,
a lost machine) is run again by whichever tuner is still or next running, from its last epoch checkpoint when the
trial folder is on that machine, under the same trial slot. No finished trial is run twice.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

from byoc_contract import search_space
from byoc_contract.metric_log import METRIC_NAMES, NUMBER
from byoc_machine import usable_cores

log = logging.getLogger("train.tune")
STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
STORAGE_ENV = "TUNE_STORAGE_URL"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.tune",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--search-space", required=True, help="YAML search space (the one sagemaker_launch tune takes)")
    parser.add_argument(
        "--study-dir", type=Path, required=True, help="study.db, one folder per trial, results.csv and best/"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help=f"Optuna RDB URL shared by tuners on several machines (default: ${STORAGE_ENV}, else "
        "sqlite:///STUDY_DIR/study.db); every user of the machine can read a process's arguments, so give a URL with "
        f"a password by --storage-file or ${STORAGE_ENV}",
    )
    parser.add_argument(
        "--storage-file",
        type=Path,
        default=None,
        help="a file holding the storage URL on its first line (keep it mode 0600)",
    )
    parser.add_argument("--study-name", default="byoc-vision", help="the study's name in the storage")
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        default=10,
        help="a running trial's heartbeat; 3 missed beats hand it to another tuner",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="Bayesian", help="Bayesian: TPE; Hyperband: TPE + Hyperband pruning"
    )
    parser.add_argument(
        "--objective",
        default="valid_acc",
        choices=[m for m in METRIC_NAMES if m.startswith("valid_")],
        help="per-epoch metric to optimise",
    )
    parser.add_argument(
        "--direction",
        choices=("Maximize", "Minimize"),
        default=None,
        help="default: Minimize for losses, Maximize otherwise",
    )
    parser.add_argument("--max-jobs", type=int, default=10, help="trials in the study, counting those of earlier runs")
    parser.add_argument("--max-parallel-jobs", type=int, default=1, help="trials running at once")
    parser.add_argument(
        "--early-stopping",
        choices=("Auto", "Off"),
        default="Off",
        help="Auto: prune trials with Hyperband on the per-epoch objective",
    )
    parser.add_argument(
        "--hyperband-resource",
        nargs=2,
        type=int,
        metavar=("MIN", "MAX"),
        default=(1, 20),
        help="Hyperband: min and max epochs",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument(
        "--keep-all", action="store_true", help="keep every trial's model and checkpoints, not only the best's"
    )
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER, help="after --: fixed flags for python -m train")
    return parser


def sampler(strategy: str, space: list[search_space.Range], seed: int):
    import optuna

    if strategy == "Grid":
        if any(r.kind != "categorical" for r in space):
            raise ValueError(
                "--strategy Grid searches categorical ranges only; list the values to try (type: categorical)."
            )
        return optuna.samplers.GridSampler({r.name: list(r.values) for r in space}, seed=seed)
    if strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def suggest(trial, space: list[search_space.Range]) -> dict[str, object]:
    """One value per range; Logarithmic ranges are sampled on a log scale."""
    params = {}
    for r in space:
        log_scale = r.scaling == "Logarithmic"
        if r.kind == "categorical":
            params[r.name] = trial.suggest_categorical(r.name, list(r.values))
        elif r.kind == "integer":
            params[r.name] = trial.suggest_int(r.name, r.low, r.high, log=log_scale)
        else:
            params[r.name] = trial.suggest_float(r.name, r.low, r.high, log=log_scale)
    return params


class Tuner:
    """Runs the study: trial processes, pruning from their metric lines, trials of stopped tuners run again."""

    def __init__(self, args: argparse.Namespace, space: list[search_space.Range]):
        import optuna

        self.args, self.space = args, space
        self.maximize = (
            args.direction or ("Minimize" if args.objective.endswith("loss") else "Maximize")
        ) == "Maximize"
        self.metric = re.compile(rf"^epoch=(\d+) .*\b{args.objective}={NUMBER}")
        self.threads = max(1, usable_cores() // args.max_parallel_jobs)
        pruner = optuna.pruners.NopPruner()
        if args.strategy == "Hyperband" or args.early_stopping == "Auto":
            low, high = args.hyperband_resource
            pruner = optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high, reduction_factor=3)
        args.study_dir.mkdir(parents=True, exist_ok=True)
        url = (
            storage_url(args.storage, args.storage_file, os.environ.get(STORAGE_ENV))
            or f"sqlite:///{args.study_dir / 'study.db'}"
        )
        self.study = open_study(
            url,
            args.study_name,
            heartbeat_seconds=args.heartbeat_seconds,
            maximize=self.maximize,
            sampler=sampler(args.strategy, space, args.seed),
            pruner=pruner,
        )

    def counted(self) -> list:
        """The study's trials that count towards --max-jobs, in order: all but those run again under a later trial
        (interrupted, or stale and retried) and those a tuner started past the limit."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in retry_history(t)}
        return [
            t
            for t in trials
            if t.number not in retried and not t.user_attrs.get("superseded") and not t.user_attrs.get("surplus")
        ]

    def finished(self) -> list:
        from optuna.trial import TrialState

        return [t for t in self.counted() if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]

    def objective(self, trial) -> float:
        import optuna

        position = sum(t.number < trial.number for t in self.counted())
        if position >= self.args.max_jobs:  # another tuner took the last trial in the meantime
            trial.set_user_attr("surplus", True)
            self.study.stop()
            raise optuna.TrialPruned("the study reached --max-jobs")
        again = (
            "slot" in trial.user_attrs
        )  # a trial run again (after Ctrl-C, or its tuner's heartbeat stopped) keeps its slot
        slot = trial.user_attrs.get("slot", trial.number)
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("host", socket.gethostname())
        params = suggest(trial, self.space)
        try:
            return self.train(trial, slot, params, again)
        except KeyboardInterrupt:  # Ctrl-C: the next run of a tuner takes the trial up where its checkpoint left it
            trial.set_user_attr("superseded", True)
            self.study.enqueue_trial(params, user_attrs={"slot": slot, "resumed": True}, skip_if_exists=False)
            raise

    def train(self, trial, slot: int, params: dict, again: bool) -> float:
        """One trial: ``python -m train`` in the slot's folder, reported and pruned epoch by epoch."""
        import optuna

        folder = self.args.study_dir / "trials" / f"{slot:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        flags = [f"--{name}={value}" for name, value in params.items()]
        # trials share one decoded-image cache (built by the first, read by the rest); a --decoded-cache after -- wins
        shared = f"--decoded-cache={self.args.study_dir / 'decoded-cache'}"
        command = [sys.executable, "-m", "train", shared, *self.args.trainer_args, *flags]
        # each trial gets its own /opt/ml tree: model, output/data, output/failure, checkpoints, tensorboard
        env = {k: v for k, v in os.environ.items() if k not in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR")}
        env.update({"SAGEMAKER_BASE_DIR": str(folder), "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"})
        log.info(
            "trial slot %d: %s%s",
            slot,
            " ".join(flags),
            " (run again: resumes from its last checkpoint)" if again else "",
        )
        last, epoch, pruned = None, 0, False
        with (folder / "train.log").open("a") as logfile:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=logfile, text=True, env=env, preexec_fn=stop_with_parent
            )
            try:
                for line in process.stdout:
                    logfile.write(line)
                    match = self.metric.match(line)
                    if match:
                        epoch, last = int(match.group(1)), float(match.group(2))
                        trial.report(last, epoch)
                        if trial.should_prune() and not pruned:
                            pruned = True
                            process.send_signal(signal.SIGTERM)
            except KeyboardInterrupt:
                process.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint and exits
                process.wait()
                raise
            code = process.wait()
        if pruned:
            trial.set_user_attr("epochs", epoch)
            raise optuna.TrialPruned(f"slot {slot} pruned at epoch {epoch} ({self.args.objective}={last})")
        if code != 0 or last is None:
            failure = (folder / "output" / "failure").read_text() if (folder / "output" / "failure").is_file() else ""
            failure = failure or _tail(folder / "train.log")
            trial.set_user_attr("failure", failure[:1000])
            raise RuntimeError(f"trial slot {slot} failed (exit {code}): {failure[:300]}")
        trial.set_user_attr("epochs", epoch)
        return last

    def run(self) -> None:
        """Trials until the study has --max-jobs finished ones, waiting out other tuners' running trials (a stopped
        tuner's trial goes stale after 3 missed heartbeats and is run again here)."""
        import optuna
        from optuna.trial import TrialState

        waiting_said = False
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            counted = self.counted()
            finished = len(self.finished())
            running = [t for t in counted if t.state == TrialState.RUNNING]
            if finished >= self.args.max_jobs:
                log.info("the study has %d finished trials (--max-jobs %d): done", finished, self.args.max_jobs)
                return
            if len(counted) - sum(t.state == TrialState.WAITING for t in counted) >= self.args.max_jobs:
                if not waiting_said:
                    log.info(
                        "waiting for %d trial(s) running elsewhere (a stopped tuner's trial is taken over after %d s "
                        "without a heartbeat)",
                        len(running),
                        3 * self.args.heartbeat_seconds,
                    )
                    waiting_said = True
                time.sleep(self.args.heartbeat_seconds)
                continue
            log.info(
                "running up to %d trial(s), %d at a time, %d thread(s) each",
                self.args.max_jobs - finished,
                self.args.max_parallel_jobs,
                self.threads,
            )
            self.study.optimize(
                self.objective,
                n_jobs=self.args.max_parallel_jobs,
                catch=(RuntimeError,),
                callbacks=[self.stop_when_full],
            )
            waiting_said = False

    def stop_when_full(self, study, _trial) -> None:
        """Optuna's callback: no new trial once the trials started or finished reach --max-jobs."""
        from optuna.trial import TrialState

        if sum(t.state != TrialState.WAITING for t in self.counted()) >= self.args.max_jobs:
            study.stop()


def storage_url(flag: str | None, file: Path | None, env: str | None) -> str | None:
    """The storage URL from ``--storage``, ``--storage-file`` or $TUNE_STORAGE_URL (at most one); None for SQLite."""
    given = [name for name, value in (("--storage", flag), ("--storage-file", file), (f"${STORAGE_ENV}", env)) if value]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} both name a storage; give one.")
    if file is not None:
        try:
            lines = file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--storage-file {file}: cannot read it ({type(exc).__name__}).") from None
        if not lines or not lines[0].strip():
            raise ValueError(f"--storage-file {file} is empty: put the storage URL on its first line.")
        return lines[0].strip()
    return flag or env or None


def masked(url: str) -> str:
    """``url`` with its password as ***, for messages and logs."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show only its scheme
        return url.split(":", 1)[0] + ":..."


def open_study(url: str, name: str, *, heartbeat_seconds: int, maximize: bool, sampler=None, pruner=None):
    """The study at ``url``; a storage that cannot be opened is a ValueError that names it without its password."""
    try:
        return create_or_load(
            url, name, heartbeat_seconds=heartbeat_seconds, maximize=maximize, sampler=sampler, pruner=pruner
        )
    except Exception as exc:
        password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.replace(password, "***") if password else reason
        raise ValueError(f"cannot open the study storage {masked(url)}: {reason[:300]}") from None


def create_or_load(url: str, name: str, *, heartbeat_seconds: int, maximize: bool, sampler=None, pruner=None):
    """Creates the study at ``url`` or loads it. Tuners started together race to create the schema and the study;
    the losers see a taken key (SQLite) or a made table (PostgreSQL) and try again, finding them made."""
    import optuna
    import sqlalchemy

    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage(url, heartbeat_seconds),
                load_if_exists=True,
                direction="maximize" if maximize else "minimize",
                sampler=sampler,
                pruner=pruner,
            )
        except sqlalchemy.exc.DatabaseError as error:
            raced = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error.orig)
            if attempt == 4 or not raced:
                raise
            time.sleep(1 + random.random())


def storage(url: str, heartbeat_seconds: int):
    """Optuna's RDB storage at ``url`` with heartbeats: a trial silent for 3 beats fails and is queued again."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_seconds,
            grace_period=3 * heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
        )


def retry_history(trial) -> list[int]:
    """The numbers of the stale trials this one runs again (Optuna's retry callback records them)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)


def stop_with_parent() -> None:
    """In the trial's process before it runs: SIGTERM when the tuner dies (Linux), so a killed tuner leaves no
    trainer behind; the trainer saves a checkpoint on SIGTERM for the tuner that takes the trial over."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.is_file() else ""


def report(tuner: Tuner) -> list[dict]:
    """The results table (printed) and ``results.csv``; the best trial's artifact copied to ``best/``."""
    trials = sorted(tuner.finished(), key=slot_of)
    rows = [
        {
            "slot": slot_of(t),
            "host": t.user_attrs.get("host"),
            "state": t.state.name,
            tuner.args.objective: t.value,
            "epochs": t.user_attrs.get("epochs"),
            "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            "resumed": bool(t.user_attrs.get("resumed") or retry_history(t)),
            **t.params,
        }
        for t in trials
    ]
    names = [r.name for r in tuner.space]
    columns = ["slot", "host", "state", tuner.args.objective, "epochs", "seconds", "resumed", *names]
    with (tuner.args.study_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(" ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print(" ".join(f"{_cell(row.get(c)):>12}" for c in columns))
    for t in trials:
        if t.state.name == "FAIL":
            print(f"slot {slot_of(t)} failed: {t.user_attrs.get('failure', 'see its train.log').strip()}")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        print("no trial completed: see trials/*/train.log")
        return rows
    best = max(complete, key=lambda t: t.value if tuner.maximize else -t.value)
    summary = f"best: slot {slot_of(best)} {tuner.args.objective}={best.value:.4f} " + " ".join(
        f"{k}={v}" for k, v in best.params.items()
    )
    slot_dir = tuner.args.study_dir / "trials" / f"{slot_of(best):03d}"
    if not (slot_dir / "model").is_dir():
        print(
            f"{summary}\nits artifact is on {best.user_attrs.get('host')}, in that tuner's "
            f"--study-dir/trials/{slot_of(best):03d}/model"
        )
        return rows
    target = tuner.args.study_dir / "best"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(slot_dir / "model", target / "model")
    (target / "trial.txt").write_text(
        f"slot {slot_of(best)}\n{tuner.args.objective}={best.value}\n"
        + "".join(f"{k}={v}\n" for k, v in best.params.items())
    )
    if not tuner.args.keep_all:
        for t in trials:
            if t is not best:
                for name in ("model", "checkpoints"):
                    shutil.rmtree(tuner.args.study_dir / "trials" / f"{slot_of(t):03d}" / name, ignore_errors=True)
    print(summary)
    print(f"best artifact: {target / 'model'}")
    return rows


def slot_of(trial) -> int:
    return trial.user_attrs.get("slot", trial.number)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trainer_args[:1] == ["--"]:
        args.trainer_args = args.trainer_args[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        if not 1 <= args.max_parallel_jobs <= args.max_jobs:
            raise ValueError(
                f"--max-parallel-jobs ({args.max_parallel_jobs}) must be between 1 and --max-jobs ({args.max_jobs})."
            )
        space = search_space.load(args.search_space)
        reverse = [r.name for r in space if r.scaling == "ReverseLogarithmic"]
        if reverse:
            raise ValueError(
                f"search space {', '.join(reverse)}: ReverseLogarithmic scaling is SageMaker's only; use Linear or "
                "Logarithmic locally."
            )
        tuner = Tuner(args, space)
        fixed = {a[2:].split("=")[0].replace("_", "-") for a in args.trainer_args if a.startswith("--")}
        clash = sorted({r.name.replace("_", "-") for r in space} & fixed)
        if clash:
            raise ValueError(f"{', '.join(clash)} is both tuned and fixed after --; drop one of them.")
        per_trial = sorted(fixed & {"model-dir", "output-data-dir", "checkpoint-dir", "tensorboard-dir"})
        if per_trial:
            raise ValueError(
                f"{', '.join('--' + f for f in per_trial)}: every trial writes under --study-dir/trials/NNN; drop "
                "them after --."
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tuner.run()
    report(tuner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
