"""A user's ``code/inference.py`` in the artifact, with the SageMaker inference toolkit's semantics: its
``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn`` replace steps of our pipeline
(``serve.pipeline``), each may take an extra ``context`` argument, and ``code/requirements.txt`` is installed
first: per model, into its own folder, under a lock, within one deadline, from the wheels shipped in ``code/`` alone
when there are any."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import inspect
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


class RequirementsError(RuntimeError):
    """code/requirements.txt could not be installed; the message says why and what to do."""


@dataclass
class Context:
    """What the toolkit's context offers a handler: the model folder and the request's headers."""

    model_dir: str
    request_headers: dict = field(default_factory=dict)

    @property
    def system_properties(self) -> dict:
        return {"model_dir": self.model_dir, "gpu_id": None}


def call(function, *args, context: Context):
    """Call with or without the trailing context argument, by the function's parameter count (as the toolkit does)."""
    count = len(inspect.signature(function).parameters)
    if count == len(args):
        return function(*args)
    if count == len(args) + 1:
        return function(*args, context)
    raise TypeError(
        f"{function.__name__} takes {count} arguments but {len(args)} (or {len(args) + 1} with context) are given"
    )


def install_requirements(model_dir: Path, packages_root: Path, timeout: float) -> Path | None:
    """Install ``code/requirements.txt`` once into a folder of its own (keyed by the model folder and the file's
    contents); None without one. When ``code/`` ships wheels, from them alone: never the index, where a public
    package of the same name could stand in for a private one. Waiting for the lock and installing share one
    deadline of ``timeout`` s."""
    code = model_dir / "code"
    requirements = code / "requirements.txt"
    if not requirements.is_file():
        return None
    deadline = time.monotonic() + timeout
    key = hashlib.sha256(str(model_dir.resolve()).encode() + b"\0" + requirements.read_bytes()).hexdigest()[:16]
    target = packages_root / key
    packages_root.mkdir(parents=True, exist_ok=True)
    with open(packages_root / f"{key}.lock", "w") as lock:
        acquire(lock, deadline, timeout)
        if (target / ".installed").is_file():
            return target
        started = time.monotonic()
        offline = any(code.glob("*.whl"))
        with tempfile.TemporaryDirectory(dir=packages_root) as staging:
            command = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                staging,
                "-r",
                str(requirements),
            ]
            command += (
                ["--no-index", "--find-links", str(code)] if offline else ["--prefer-binary", "--find-links", str(code)]
            )
            returncode, output = run_pip(command, requirements, deadline, timeout)
            if returncode != 0:
                lines = output.strip().splitlines()
                reason = lines[-1] if lines else f"pip exited with {returncode}"
                advice = (
                    "code/ ships wheels, so only they are used: add the missing ones (pip download -d code/ -r "
                    "code/requirements.txt)"
                    if offline
                    else "ship the wheels in code/ for an offline endpoint"
                )
                raise RequirementsError(
                    f"pip could not install {requirements}: {reason}. {advice[0].upper()}{advice[1:]}."
                )
            shutil.rmtree(target, ignore_errors=True)
            Path(staging).rename(target)
            (target / ".installed").touch()
            log.info(
                "installed %s into %s in %.1f s%s",
                requirements,
                target,
                time.monotonic() - started,
                " from its wheels alone" if offline else "",
            )
            return target


def run_pip(command: list[str], requirements: Path, deadline: float, timeout: float) -> tuple[int, str]:
    """(exit code, output) of pip installing ``requirements``, run in its folder in a process group of its own;
    past ``deadline`` the whole group is killed (pip's build backends and their children too) and
    RequirementsError says so."""
    process = subprocess.Popen(
        command,
        cwd=requirements.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RequirementsError(
            f"installing {requirements} took over {timeout:g} s (SERVE_REQUIREMENTS_TIMEOUT_SECONDS); ship wheels "
            "in code/."
        ) from None
    return process.returncode, output


def acquire(lock, deadline: float, timeout: float) -> None:
    """An exclusive lock on the open file ``lock``, waiting until ``deadline`` at most (another worker may be
    installing); the wait counts against the install's ``timeout``."""
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RequirementsError(
                    f"another process held the requirements lock {lock.name} for over {timeout:g} s "
                    "(SERVE_REQUIREMENTS_TIMEOUT_SECONDS)"
                ) from None
            time.sleep(0.1)


def user_module(model_dir: Path, program: str, packages_root: Path, timeout: float) -> ModuleType | None:
    """Import ``code/<program>`` from the model folder, after installing its requirements; None without one."""
    code = model_dir / "code"
    script = code / program
    if not script.is_file():
        return None
    packages = install_requirements(model_dir, packages_root, timeout)
    if packages is not None:
        sys.path.insert(0, str(packages))
    sys.path.insert(0, str(code))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overridden = [name for name in HANDLER_FUNCTIONS if hasattr(module, name)]
    log.info("using %s from %s", ", ".join(overridden) or "no handler functions", script)
    return module
