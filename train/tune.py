"""``python -m train.tune``: hyperparameter tuning on this machine with Optuna, over the same YAML search space
as ``sagemaker_launch tune``, each trial a run of ``python -m train``.

    python -m train.tune --search-space space.yaml --study-dir runs/tune --max-jobs 8 --max-parallel-jobs 2 \\
        -- --train data/train --valid data/valid --epochs 5

Each trial is a separate ``python -m train`` process, the command the training container runs: trials get
their own memory and threads, run truly in parallel, one crash does not take the study down, and a pruned
trial is stopped with SIGTERM like SageMaker stops a job. Its metric lines are read as SageMaker's metric
definitions read them. The study lives in ``<study-dir>/study.db`` (SQLite): stop the tuner at any time and
run the same command again; trials cut short are run again from their last epoch checkpoint, under the
same trial slot, and no finished trial is run twice.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from byoc_contract import search_space
from byoc_contract.metric_log import METRIC_NAMES, NUMBER

log = logging.getLogger("train.tune")
STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.tune", description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--search-space", required=True, help="YAML search space (the one sagemaker_launch tune takes)")
    parser.add_argument("--study-dir", type=Path, required=True, help="study.db, one folder per trial, results.csv and best/")
    parser.add_argument("--strategy", choices=STRATEGIES, default="Bayesian", help="Bayesian: TPE; Hyperband: TPE + Hyperband pruning")
    parser.add_argument("--objective", default="valid_acc", choices=[m for m in METRIC_NAMES if m.startswith("valid_")], help="per-epoch metric to optimise")
    parser.add_argument("--direction", choices=("Maximize", "Minimize"), default=None, help="default: Minimize for losses, Maximize otherwise")
    parser.add_argument("--max-jobs", type=int, default=10, help="trials in the study, counting those of earlier runs")
    parser.add_argument("--max-parallel-jobs", type=int, default=1, help="trials running at once")
    parser.add_argument("--early-stopping", choices=("Auto", "Off"), default="Off", help="Auto: prune trials with Hyperband on the per-epoch objective")
    parser.add_argument("--hyperband-resource", nargs=2, type=int, metavar=("MIN", "MAX"), default=(1, 20), help="Hyperband: min and max epochs")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--keep-all", action="store_true", help="keep every trial's model and checkpoints, not only the best's")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER, help="after --: fixed flags for python -m train")
    return parser


def sampler(strategy: str, space: list[search_space.Range], seed: int):
    import optuna

    if strategy == "Grid":
        if any(r.kind != "categorical" for r in space):
            raise ValueError("--strategy Grid searches categorical ranges only; list the values to try (type: categorical).")
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
    """Runs the study: trial processes, pruning from their metric lines, resume of interrupted trials."""

    def __init__(self, args: argparse.Namespace, space: list[search_space.Range]):
        import optuna

        self.args, self.space = args, space
        self.maximize = (args.direction or ("Minimize" if args.objective.endswith("loss") else "Maximize")) == "Maximize"
        self.metric = re.compile(rf"^epoch=(\d+) .*\b{args.objective}={NUMBER}")
        self.threads = max(1, (os.cpu_count() or 1) // args.max_parallel_jobs)
        self.lock = threading.Lock()
        pruner = optuna.pruners.NopPruner()
        if args.strategy == "Hyperband" or args.early_stopping == "Auto":
            low, high = args.hyperband_resource
            pruner = optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high, reduction_factor=3)
        args.study_dir.mkdir(parents=True, exist_ok=True)
        self.study = optuna.create_study(
            study_name="byoc-vision", storage=f"sqlite:///{args.study_dir / 'study.db'}", load_if_exists=True,
            direction="maximize" if self.maximize else "minimize", sampler=sampler(args.strategy, space, args.seed), pruner=pruner,
        )  # fmt: skip

    def requeue_interrupted(self) -> None:
        """Trials left RUNNING by a tuner that is gone: marked superseded, their parameters queued again."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = trial.user_attrs.get("tuner_pid")
            if pid is not None and _alive(pid):
                continue
            self.study._storage.set_trial_user_attr(trial._trial_id, "superseded", True)
            self.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            slot = trial.user_attrs.get("slot", trial.number)
            self.study.enqueue_trial(trial.params, user_attrs={"slot": slot, "resumed": True})
            log.info("trial slot %s was cut short by an earlier run: queued again, it resumes from its last checkpoint", slot)

    def finished(self) -> list:
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not t.user_attrs.get("superseded")]

    def objective(self, trial) -> float:
        import optuna

        slot = trial.user_attrs.get("slot")
        if slot is None:
            with self.lock:
                slot = self.next_slot
                self.next_slot += 1
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("tuner_pid", os.getpid())
        params = suggest(trial, self.space)
        folder = self.args.study_dir / "trials" / f"{slot:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        flags = [f"--{name}={value}" for name, value in params.items()]
        # trials share one decoded-image cache (built by the first, read by the rest); a --decoded-cache after -- wins
        shared = f"--decoded-cache={self.args.study_dir / 'decoded-cache'}"
        command = [sys.executable, "-m", "train", shared, *self.args.trainer_args, *flags]
        # each trial gets its own /opt/ml tree: model, output/data, output/failure, checkpoints, tensorboard
        env = {k: v for k, v in os.environ.items() if k not in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR")}
        env.update({"SAGEMAKER_BASE_DIR": str(folder), "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"})
        log.info("trial slot %d: %s", slot, " ".join(flags))
        last, pruned = None, False
        with (folder / "train.log").open("a") as logfile:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=logfile, text=True, env=env)
            for line in process.stdout:
                logfile.write(line)
                match = self.metric.match(line)
                if match:
                    epoch, last = int(match.group(1)), float(match.group(2))
                    trial.report(last, epoch)
                    if trial.should_prune() and not pruned:
                        pruned = True
                        process.send_signal(signal.SIGTERM)
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
        self.requeue_interrupted()
        slots = [t.user_attrs["slot"] for t in self.study.get_trials(deepcopy=False) if "slot" in t.user_attrs]
        self.next_slot = max(slots, default=-1) + 1
        remaining = self.args.max_jobs - len(self.finished())
        if remaining > 0:
            log.info("running %d trial(s), %d at a time, %d thread(s) each", remaining, self.args.max_parallel_jobs, self.threads)
            self.study.optimize(self.objective, n_trials=remaining, n_jobs=self.args.max_parallel_jobs, catch=(RuntimeError,))
        else:
            log.info("the study already has %d finished trials (--max-jobs %d): nothing to run", len(self.finished()), self.args.max_jobs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.is_file() else ""


def report(tuner: Tuner) -> list[dict]:
    """The results table (printed) and ``results.csv``; the best trial's artifact copied to ``best/``."""
    trials = sorted(tuner.finished(), key=lambda t: t.user_attrs["slot"])
    rows = [
        {"slot": t.user_attrs["slot"], "state": t.state.name, tuner.args.objective: t.value, "epochs": t.user_attrs.get("epochs"),
         "seconds": round(t.duration.total_seconds(), 1) if t.duration else None, "resumed": bool(t.user_attrs.get("resumed")), **t.params}  # fmt: skip
        for t in trials
    ]
    names = [r.name for r in tuner.space]
    columns = ["slot", "state", tuner.args.objective, "epochs", "seconds", "resumed", *names]
    with (tuner.args.study_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(" ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print(" ".join(f"{_cell(row.get(c)):>12}" for c in columns))
    for t in trials:
        if t.state.name == "FAIL":
            print(f"slot {t.user_attrs['slot']} failed: {t.user_attrs.get('failure', 'see its train.log').strip()}")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        print("no trial completed: see trials/*/train.log")
        return rows
    best = max(complete, key=lambda t: t.value if tuner.maximize else -t.value)
    slot_dir = tuner.args.study_dir / "trials" / f"{best.user_attrs['slot']:03d}"
    target = tuner.args.study_dir / "best"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(slot_dir / "model", target / "model")
    (target / "trial.txt").write_text(f"slot {best.user_attrs['slot']}\n{tuner.args.objective}={best.value}\n" + "".join(f"{k}={v}\n" for k, v in best.params.items()))
    if not tuner.args.keep_all:
        for t in trials:
            if t is not best:
                for name in ("model", "checkpoints"):
                    shutil.rmtree(tuner.args.study_dir / "trials" / f"{t.user_attrs['slot']:03d}" / name, ignore_errors=True)
    print(f"best: slot {best.user_attrs['slot']} {tuner.args.objective}={best.value:.4f} " + " ".join(f"{k}={v}" for k, v in best.params.items()))
    print(f"best artifact: {target / 'model'}")
    return rows


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
            raise ValueError(f"--max-parallel-jobs ({args.max_parallel_jobs}) must be between 1 and --max-jobs ({args.max_jobs}).")
        space = search_space.load(args.search_space)
        reverse = [r.name for r in space if r.scaling == "ReverseLogarithmic"]
        if reverse:
            raise ValueError(f"search space {', '.join(reverse)}: ReverseLogarithmic scaling is SageMaker's only; use Linear or Logarithmic locally.")
        tuner = Tuner(args, space)
        fixed = {a[2:].split("=")[0].replace("_", "-") for a in args.trainer_args if a.startswith("--")}
        clash = sorted({r.name.replace("_", "-") for r in space} & fixed)
        if clash:
            raise ValueError(f"{', '.join(clash)} is both tuned and fixed after --; drop one of them.")
        per_trial = sorted(fixed & {"model-dir", "output-data-dir", "checkpoint-dir", "tensorboard-dir"})
        if per_trial:
            raise ValueError(f"{', '.join('--' + f for f in per_trial)}: every trial writes under --study-dir/trials/NNN; drop them after --.")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tuner.run()
    report(tuner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
